"""The one settings object (``TIERWISE_`` environment variables, nested with ``__``).

Build it once in each ``main()`` and pass sections or plain values down.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
#: The bundle ``tierwise serve`` loads when no model is named: the two-tier router the selection
#: protocol picks (``bench/bench_protocol.py``, RESULTS.md "Selection protocol"; issue 17's rule).
#: ``routellm_fast`` (hand features, microsecond decisions) stays shipped for latency-bound use.
DEFAULT_BUNDLE = DATA_DIR / "models" / "routellm"


class ModelSettings(BaseModel):
    """Where the served bundle comes from."""

    path: Path = DEFAULT_BUNDLE
    #: ``models:/<name>@champion`` (or any models:/ URI) to materialise from MLflow instead.
    registry_uri: str | None = None
    encoder_threads: int = Field(default=0, ge=0)


class ServerLimits(BaseModel):
    """What one HTTP (and, for the router, gRPC) server process holds open, as proxies set it.

    Safe defaults; ``TIERWISE_SERVICE__SERVER__*`` and ``TIERWISE_GATEWAY__SERVER__*`` change
    them (``service.shared.server_limits``).
    """

    #: A connection's request headers must be complete this long after it opened (or after its
    #: previous answer), else it is closed: slowloris and idle half-open connections.
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: An idle keep-alive connection is closed after this long (uvicorn ``timeout_keep_alive``).
    keep_alive_s: float = Field(default=5.0, gt=0)
    #: Request line plus headers larger than this get 431 and the connection is closed.
    max_header_bytes: int = Field(default=32_768, ge=1024)
    #: Open connections per process: one more takes the place of the one waiting longest for
    #: a request's headers, or is closed at once when every connection is serving a request.
    max_connections: int = Field(default=2048, ge=1)
    #: Requests in flight per process; one more gets 503 with ``Retry-After`` (health and
    #: metrics are exempt).
    max_in_flight: int = Field(default=256, ge=1)
    retry_after_s: int = Field(default=1, ge=1)
    #: gRPC: concurrent streams per connection, keepalive pings, idle connections closed.
    grpc_max_concurrent_streams: int = Field(default=100, ge=1)
    grpc_keepalive_s: float = Field(default=60.0, gt=0)
    grpc_max_connection_idle_s: float = Field(default=300.0, gt=0)


class ServiceSettings(BaseModel):
    """The router microservice."""

    host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    max_prompt_chars: int = Field(default=200_000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_items: int = Field(default=256, ge=1)
    batch_max_size: int = Field(default=32, ge=1)
    batch_max_wait_ms: float = Field(default=2.0, ge=0)
    max_queue: int = Field(default=1024, ge=1)
    traffic_path: Path | None = None
    admin_key: SecretStr | None = None
    grace_seconds: float = Field(default=5.0, ge=0)
    #: A decision not ready within this many seconds fails with 504 / DEADLINE_EXCEEDED (gRPC
    #: callers' own shorter deadlines also apply).
    request_timeout_s: float = Field(default=10.0, gt=0)
    #: Poll the served bundle this often (seconds) and reload it when it changes: a bundle
    #: directory's manifest.json (unset: no watch), or for ``models:/NAME@ALIAS`` the version the
    #: alias names (unset: every 30 s, ``service.router.registry_watch``). 0 turns either watch off.
    watch_interval_s: float = Field(default=0.0, ge=0)
    #: Directories an admin reload may load a bundle from (``TIERWISE_SERVICE__BUNDLE_ROOTS``,
    #: comma-separated or a JSON list); the bundle must lie under one, symlinks resolved.
    bundle_roots: Annotated[tuple[Path, ...], NoDecode] = (DATA_DIR / "models",)
    server: ServerLimits = ServerLimits()

    @field_validator("bundle_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [p.strip() for p in value.split(",") if p.strip()]
        return value


class GatewaySettings(BaseModel):
    """The OpenAI-compatible forwarding gateway."""

    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    admin_key: SecretStr | None = None
    #: Serve without client keys (``--no-auth``); otherwise TIERWISE_API_KEYS must be set.
    no_auth: bool = False
    server: ServerLimits = ServerLimits()


class TrainingSettings(BaseModel):
    """Training, evaluation and the model registry."""

    mlflow_tracking_uri: str = f"sqlite:///{REPO_ROOT / 'mlflow.db'}"
    sources_dir: Path = DATA_DIR / "sources"
    labeled_dir: Path = DATA_DIR / "labeled"
    models_dir: Path = DATA_DIR / "models"
    cache_dir: Path = DATA_DIR / "cache"
    seed: int = 0


class Settings(BaseSettings):
    """All tierwise configuration; environment variables override defaults."""

    model_config = SettingsConfigDict(env_prefix="TIERWISE_", env_nested_delimiter="__")

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    #: Client keys of the gateway, comma-separated in ``TIERWISE_API_KEYS``.
    api_keys: SecretStr | None = None
    model: ModelSettings = ModelSettings()
    service: ServiceSettings = ServiceSettings()
    gateway: GatewaySettings = GatewaySettings()
    training: TrainingSettings = TrainingSettings()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return value.upper()

    def client_keys(self) -> tuple[str, ...]:
        """The gateway's client API keys (empty when unset)."""
        if self.api_keys is None:
            return ()
        return tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())


def env_secrets(names: Iterable[str]) -> dict[str, SecretStr | None]:
    """Values of the named environment variables, as secrets (None when unset or empty).

    Config files name the variables that hold upstream API keys (the gateway's ``api_key_env``),
    never the keys; this module, the only one that reads the environment, resolves the names.
    """
    import os

    out: dict[str, SecretStr | None] = {}
    for name in names:
        value = os.environ.get(name)
        out[name] = SecretStr(value) if value else None
    return out


def quiet_third_party_env() -> None:
    """Set environment switches third-party libraries read at import time (this module owns env).

    MLflow otherwise tries to reach its telemetry host, which fails on an offline machine.
    """
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
