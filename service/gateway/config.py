"""The gateway's YAML config file: tiers with their upstreams, router source, traffic, A/B, limits.

Validated with pydantic when the gateway starts; any problem stops it with a message naming the
file and the field. API keys never appear in the file: each tier names the environment variable
that holds its upstream key (``api_key_env``), resolved by ``router_model.settings``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from router_model.errors import InvalidData
from router_model.tiers import Tier, validate_tiers
from router_model.traffic_schema import POSTGRES_PREFIXES, SQLITE_PREFIX

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ADDRESS = re.compile(r"^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierConfig(_Strict):
    """One tier and the OpenAI-compatible upstream that serves its model."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    base_url: str = Field(pattern=r"^https?://\S+$", description="e.g. https://api.openai.com/v1")
    #: NAME of the environment variable holding the upstream API key (never the key itself).
    api_key_env: str
    input_price: float = Field(ge=0, description="USD per 1M input tokens")
    output_price: float = Field(ge=0, description="USD per 1M output tokens")
    #: Deadline of one attempt on this tier: a non-stream answer must arrive whole within it; a
    #: stream must send its first chunk within it, then no gap between chunks may exceed it.
    #: Past it the gateway fails over (``service.gateway.upstream.pool``).
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: Fraction taken off this tier's prices for requests sent through the upstream's batch
    #: endpoint (0.5: half price); None: the upstream has no batch endpoint (``service.batch_*``).
    batch_discount: float | None = Field(default=None, ge=0, lt=1)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"must be an environment variable NAME (not a key), got {value[:4]}…")
        return value

    def tier(self) -> Tier:
        """The domain tier (name, model, prices)."""
        return Tier(self.name, self.model, self.input_price, self.output_price)


class RouterConfig(_Strict):
    """Where decisions come from: a bundle in process, or the router service over gRPC."""

    bundle: Path | None = None
    address: str | None = None
    #: Deadline of each gRPC call; past it the gateway fails open to ``default_tier``.
    timeout_s: float = Field(default=0.25, gt=0, le=30)
    encoder_threads: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> RouterConfig:
        if self.bundle is not None and self.address is not None:
            raise ValueError("give either 'bundle' or 'address', not both")
        if self.address is not None and not _ADDRESS.match(self.address):
            raise ValueError(f"address must be HOST:PORT, got {self.address!r}")
        return self


class TrafficConfig(_Strict):
    """Where every request's ``TrafficRecord`` is committed, and whether prompts are kept."""

    url: str = Field(default="sqlite:///data/local/traffic.db", min_length=1)
    store_prompts: bool = False

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith((SQLITE_PREFIX, *POSTGRES_PREFIXES)):
            raise ValueError("must be sqlite:///PATH or postgresql://… (a PostgreSQL URL)")
        return value


class ArmConfig(_Strict):
    """One A/B arm: ``router`` (no tier) or a fixed arm that always uses ``tier``."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    tier: str | None = None
    weight: float = Field(gt=0)


class ABConfig(_Strict):
    """The split of ``tierwise-auto`` requests among arms, sticky per user by a salted hash."""

    arms: list[ArmConfig] = Field(min_length=1)
    salt: str = "tierwise"

    @model_validator(mode="after")
    def _unique(self) -> ABConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        return self


class LimitsConfig(_Strict):
    """Request limits: larger requests are refused with 413 before any work; per client key,
    requests and tokens per minute and spend per UTC day (429, ``service.gateway.quotas``)."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: The scored text (``completions.request_text``) past this many characters is a 413, as at
    #: the router (``TIERWISE_SERVICE__MAX_PROMPT_CHARS``), before trimming or tokenising.
    max_scored_chars: int = Field(default=200_000, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    daily_spend_usd: float | None = Field(default=None, gt=0)


class FailoverConfig(_Strict):
    """Retries on other tiers and the per-upstream circuit breaker."""

    enabled: bool = True
    #: Consecutive failures that open an upstream's breaker, and how long it stays open.
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)


class CacheConfig(_Strict):
    """The response cache (``service.gateway.levers.cache.response``, ``docs/cache.md``): exact,
    then canonical, then (opt-in) semantic on the encoder with an equivalence check."""

    enabled: bool = False
    #: Reformatted repeats of the last user turn (case, whitespace, option markers) hit.
    canonical: bool = True
    #: The semantic layer: off by default (its measured false-hit rate is in docs/cache.md).
    semantic: bool = False
    #: Cosine similarity at or above which a stored answer serves a new chat (semantic layer),
    #: when the equivalence check passes too.
    similarity: float = Field(default=0.95, gt=0, le=1)
    ttl_s: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Shared store for every replica (``postgresql://…``); absent: this process's memory.
    url: str | None = Field(default=None, min_length=1)
    #: Longest wait on the shared store per lookup; past it (or on any error) the lookup misses.
    timeout_s: float = Field(default=0.25, gt=0, le=10)
    #: How often each replica pulls other replicas' new embeddings into its semantic mirror.
    refresh_s: float = Field(default=1.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _cache_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(POSTGRES_PREFIXES):
            raise ValueError("must be postgresql://… (a PostgreSQL URL), or absent for in-process")
        return value


class TrimConfig(_Strict):
    """Prompt trimming (``service.gateway.levers.trimming``); a request's ``tierwise.trim`` wins
    over this."""

    enabled: bool = False
    max_input_tokens: int = Field(default=4000, ge=256)


class CascadeConfig(_Strict):
    """The cascade (``service.gateway.levers.cascade``); a request's ``tierwise.cascade`` wins over
    ``enabled``."""

    enabled: bool = False
    #: The confidence threshold: the router's probability that the draft tier is adequate below
    #: which no draft is tried (the routed tier answers alone).
    min_prior: float = Field(default=0.2, ge=0, le=1)
    #: A draft whose returned token logprobs average below this is escalated.
    min_mean_logprob: float = Field(default=-1.0, le=0)
    #: Ask the draft tier for token logprobs (``logprobs: true``) when the client did not, so the
    #: logprob check always has evidence; they are removed from the answer the client gets. Off
    #: by default: turn it on only when every draft tier's upstream accepts ``logprobs``.
    request_logprobs: bool = False


class BatchConfig(_Strict):
    """The batch window (``service.gateway.batch.window``): non-urgent requests go out in batch
    files."""

    enabled: bool = False
    #: How long queued requests gather before a tier's batch file is sent upstream.
    window_s: float = Field(default=60.0, gt=0)
    #: Requests per batch file; a full batch is sent at once (OpenAI takes up to 50,000).
    max_requests: int = Field(default=1000, ge=1, le=50_000)
    #: How often each replica flushes due windows and polls its open batches.
    poll_interval_s: float = Field(default=30.0, gt=0)
    #: How long a replica's claim on queued requests or an open batch holds before another
    #: replica may take it over (a replica that died mid-submit or mid-poll). The replica at work
    #: renews it every lease_s / 3, so it need not cover an upload (see upload_timeout_s); at
    #: least 1 s, so that a renewal (one job-store write) lands well before the lease lapses.
    lease_s: float = Field(default=300.0, ge=1)
    #: The longest one batch file's upload may take in all (each HTTP read or write also has the
    #: tier's timeout_s, at least 60 s); a slower upload fails its jobs. Independent of lease_s.
    upload_timeout_s: float = Field(default=600.0, gt=0)
    #: How long a finished job (its answer) stays fetchable before it is deleted (default 7 days;
    #: OpenAI keeps batch output files for 30 days, clients should fetch well before that).
    retention_s: float = Field(default=7 * 86_400.0, gt=0)


class BudgetConfig(_Strict):
    """The budget knob (``service.gateway.levers.budget``): a target share of calls to the top
    tier."""

    #: The share of routed calls the top tier should get (absent: no budget, the default knob).
    top_share: float | None = Field(default=None, ge=0, le=1)
    #: How many recent router decisions the knob is fitted on.
    window: int = Field(default=2000, ge=10, le=100_000)
    #: Decisions needed before the budget sets the knob (before: ``default_quality``).
    min_samples: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> BudgetConfig:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds window ({self.window})")
        return self


class ShadowConfig(_Strict):
    """Shadow labels (``service.gateway.shadow``): a sampled share of routed requests also asks
    the other allowed tiers, after the client has its answer, and an LLM judge grades them."""

    #: Share of routed ``tierwise-auto`` requests sampled (0: off).
    rate: float = Field(default=0.0, ge=0, le=1)
    #: The judge: a tier's name or model (it is called through that tier's upstream).
    judge: str | None = None
    #: Shadow spend (shadow calls and judge calls, list prices) allowed per UTC day.
    max_usd_per_day: float = Field(default=10.0, ge=0)
    #: Samples waiting for a worker; a sample arriving at a full queue is dropped and counted.
    queue: int = Field(default=100, ge=1, le=100_000)
    #: Samples worked on at once.
    concurrency: int = Field(default=2, ge=1, le=64)
    #: Deadline of each shadow or judge call.
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: A judge template file (``router_model.judge``); absent: the default template.
    template: Path | None = None


class TracingConfig(_Strict):
    """OpenTelemetry traces (``service.gateway.tracing``): off unless ``endpoint`` is set."""

    #: The OTLP/HTTP traces URL of a collector, e.g. ``http://otel-collector:4318/v1/traces``
    #: (absent: no tracing, and no cost on the request path).
    endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    #: The ``service.name`` resource attribute of every span.
    service_name: str = Field(default="tierwise-gateway", min_length=1)
    #: Share of requests traced (by trace id); a client's ``traceparent`` sampled flag wins.
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    #: Deadline of one export of a batch of spans (retries included); past it the batch is
    #: dropped and the SDK logs it. Exports run on their own thread, never in a request.
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class GatewayConfig(_Strict):
    """The whole gateway config file."""

    tiers: list[TierConfig] = Field(min_length=2)
    router: RouterConfig = RouterConfig()
    #: The tier used when the router cannot be reached (fail-open).
    default_tier: str
    #: The knob used when a request sets none (None: the bundle's default).
    default_quality: float | None = Field(default=None, ge=0, le=1)
    budget: BudgetConfig = BudgetConfig()
    traffic: TrafficConfig = TrafficConfig()
    ab: ABConfig | None = None
    limits: LimitsConfig = LimitsConfig()
    failover: FailoverConfig = FailoverConfig()
    cache: CacheConfig = CacheConfig()
    trim: TrimConfig = TrimConfig()
    cascade: CascadeConfig = CascadeConfig()
    batch: BatchConfig = BatchConfig()
    shadow: ShadowConfig = ShadowConfig()
    tracing: TracingConfig = TracingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        try:
            validate_tiers([t.tier() for t in self.tiers], source="tiers")
        except InvalidData as exc:
            raise ValueError(str(exc)) from exc
        names = {t.name for t in self.tiers}
        if self.default_tier not in names:
            raise ValueError(f"default_tier {self.default_tier!r} is not a tier ({sorted(names)})")
        for arm in self.ab.arms if self.ab else []:
            if arm.tier is not None and arm.tier not in names:
                raise ValueError(f"ab arm {arm.name!r}: tier {arm.tier!r} is not a tier")
            if arm.tier is None and arm.name != "router":
                raise ValueError(f"ab arm {arm.name!r} needs a tier (only 'router' has none)")
        judge = self.shadow.judge
        if self.shadow.rate > 0 and judge is None:
            raise ValueError("shadow.judge is required when shadow.rate > 0")
        if judge is not None and judge not in names | {t.model for t in self.tiers}:
            raise ValueError(f"shadow.judge {judge!r} is not a tier's name or model")
        for t in self.tiers:
            for other in self.tiers:
                if other is not t and t.name == other.model:
                    raise ValueError(f"tier name {t.name!r} is another tier's model: ambiguous")
        return self

    def tier_ladder(self) -> tuple[Tier, ...]:
        """The configured tiers as domain objects, cheapest first."""
        return tuple(t.tier() for t in self.tiers)

    def judge_tier(self) -> str | None:
        """The name of the tier whose upstream the shadow judge is (None: no judge)."""
        judge = self.shadow.judge
        return next((t.name for t in self.tiers if judge in (t.name, t.model)), None)

    def api_key_envs(self) -> list[str]:
        """The environment variable names that hold upstream keys."""
        return sorted({t.api_key_env for t in self.tiers})


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_gateway_config(doc: Any, *, source: str = "gateway config") -> GatewayConfig:
    """Validate a parsed config document.

    Raises:
        InvalidData: naming ``source`` and each offending field.
    """
    if not isinstance(doc, dict):
        raise InvalidData(f"{source}: expected a mapping with 'tiers:' and 'default_tier:'")
    try:
        return GatewayConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidData(f"{source}: {problems}") from None


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway YAML file; relative paths in it are relative to the file.

    Raises:
        InvalidData: when the file is unreadable, not YAML, or a field is missing or invalid.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidData(f"{path}: cannot read gateway config ({exc})") from exc
    config = parse_gateway_config(doc, source=str(path))
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: GatewayConfig, base: Path) -> GatewayConfig:
    bundle = config.router.bundle
    url = config.traffic.url
    template = config.shadow.template
    if template is not None and not template.is_absolute():
        template = base / template
    if bundle is not None and not bundle.is_absolute():
        bundle = base / bundle
    prefix = SQLITE_PREFIX
    if url.startswith(prefix) and not url[len(prefix):].startswith("/"):
        url = prefix + str(base / url[len(prefix):])
    return config.model_copy(update={
        "router": config.router.model_copy(update={"bundle": bundle}),
        "traffic": config.traffic.model_copy(update={"url": url}),
        "shadow": config.shadow.model_copy(update={"template": template}),
    })
