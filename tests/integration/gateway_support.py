"""Fixtures of the gateway tests: fake upstreams, a gateway factory on loopback, PostgreSQL.

Test modules import the fixtures they use (``from gateway_support import ...  # noqa: F401``);
each fixture function is registered under the name in its ``name=``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import psycopg
import pytest
from fake_upstream import FakeUpstream, ServerThread, start_server

from service.gateway.app import create_gateway_app
from service.gateway.assembly import GatewayOptions
from service.gateway.completions import Completions
from service.gateway.config import GatewayConfig, parse_gateway_config
from service.gateway.levers.cache.store_pg import TABLE as CACHE_TABLE

CLIENT_KEY = "tw-client-key-1"
ADMIN_KEY = "tw-admin-key"
UPSTREAM_KEY = "sk-upstream-SECRET-0xC0FFEE"
KEY_ENV = "FAKE_UPSTREAM_KEY"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
HARD = "Prove that there are infinitely many primes, then derive the prime number theorem."
EASY = "hi"


@dataclass
class Upstreams:
    """The two fake upstreams (weak, strong), each a real server on loopback."""

    weak: FakeUpstream
    strong: FakeUpstream
    weak_url: str
    strong_url: str

    def reset(self) -> None:
        for u in (self.weak, self.strong):
            u.mode, u.send_usage, u.trickle_s = "ok", True, 0.1
            u.content, u.encoding, u.reply = None, "ascii", None
            u.requests.clear()
            u.headers.clear()


@pytest.fixture(name="upstreams", scope="module")
def upstreams_fixture() -> Iterator[Upstreams]:
    weak, strong = FakeUpstream("weak"), FakeUpstream("strong")
    servers: list[ServerThread] = [start_server(weak.app()), start_server(strong.app())]
    ups = Upstreams(weak, strong, servers[0].url + "/v1", servers[1].url + "/v1")
    yield ups
    for s in servers:
        s.stop()


def tier_docs(ups: Upstreams, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    """The routellm tiers on the fake upstreams, with per-tier changes, e.g.
    ``weak={"timeout_s": 0.3}``. The 10 s timeout outlasts a loaded machine's slow fake answer;
    a test about a stall sets a short one."""
    tiers: list[dict[str, Any]] = [
        {"name": "weak", "model": WEAK, "base_url": ups.weak_url, "api_key_env": KEY_ENV,
         "input_price": 0.6, "output_price": 0.6, "timeout_s": 10.0},
        {"name": "strong", "model": STRONG, "base_url": ups.strong_url,
         "api_key_env": KEY_ENV, "input_price": 10.0, "output_price": 30.0, "timeout_s": 10.0},
    ]
    for tier in tiers:
        tier.update(changes.get(tier["name"], {}))
    return tiers


def config_doc(ups: Upstreams, tmp: Path, **overrides: Any) -> dict[str, Any]:
    """A gateway config document with the routellm tiers on the fake upstreams."""
    doc: dict[str, Any] = {
        "tiers": tier_docs(ups),
        "default_tier": "weak",
        "traffic": {"url": f"sqlite:///{tmp / 'traffic.db'}", "store_prompts": False},
        "failover": {"failure_threshold": 3, "cooldown_s": 30},
    }
    doc.update(overrides)
    return doc


@dataclass
class Gateway:
    """A started gateway on loopback."""

    url: str
    config: GatewayConfig
    app: Any

    clients: dict[str, openai.OpenAI] = field(default_factory=dict)

    def client(self, key: str = CLIENT_KEY) -> openai.OpenAI:
        """An OpenAI SDK client of this gateway (one per key: building one takes ~70 ms)."""
        if key not in self.clients:
            self.clients[key] = openai.OpenAI(
                base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=20
            )
        return self.clients[key]

    def http(self, key: str | None = CLIENT_KEY) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20)

    @property
    def completions(self) -> Completions:
        completions: Completions = self.app.state.completions
        return completions


def start_gateway(doc: dict[str, Any], **options: Any) -> tuple[Gateway, ServerThread]:
    """Validate ``doc``, build the app and serve it (lifespan on) from a thread."""
    config = parse_gateway_config(doc)
    opts = GatewayOptions(
        client_keys=(CLIENT_KEY, "tw-client-key-2"), admin_key=ADMIN_KEY,
        upstream_keys={KEY_ENV: UPSTREAM_KEY}, **options,
    )
    app = create_gateway_app(config, opts)
    st = start_server(app, lifespan="on")
    return Gateway(st.url, config, app), st


@pytest.fixture(name="make_gateway")
def make_gateway_fixture(
    upstreams: Upstreams, tmp_path: Path
) -> Iterator[Any]:
    """A factory: ``make_gateway(bundle=Path | None, **config_overrides)`` -> ``Gateway``."""
    started: list[ServerThread] = []
    gateways: list[Gateway] = []
    upstreams.reset()

    def make(bundle: Path | None = None, **overrides: Any) -> Gateway:
        doc = config_doc(upstreams, tmp_path, **overrides)
        if bundle is not None:
            doc.setdefault("router", {})["bundle"] = str(bundle)
        gateway, st = start_gateway(doc)
        started.append(st)
        gateways.append(gateway)
        return gateway

    yield make
    for gateway in gateways:
        for c in gateway.clients.values():
            c.close()
    for st in started:
        st.stop()
    upstreams.reset()


@pytest.fixture(name="postgres_url")
def postgres_url_fixture() -> Iterator[str]:
    """A fresh PostgreSQL database on the server named by TIERWISE_TEST_POSTGRES_URL (CI sets it).

    Skips when the variable is unset (local runs without a server); ``.ci/run`` always sets it.
    """
    base = os.environ.get("TIERWISE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("TIERWISE_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against "
                    "(.ci/run starts one)")
    import psycopg

    name = f"tierwise_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = urlsplit(base)._replace(path="/" + name).geturl()
    yield url
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(name="child_env")
def child_env_fixture() -> dict[str, str]:
    """This process's environment, for subprocesses (tests read the environment only here)."""
    return dict(os.environ)


def wait_until(check: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Poll ``check`` (background work on a gateway's loop) every 50 ms for up to ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def cache_rows(url: str) -> int:
    """Entries in the shared response cache's table at the PostgreSQL ``url``."""
    with psycopg.connect(url) as conn:
        found = conn.execute(f"SELECT count(*) FROM {CACHE_TABLE}").fetchone()
    return int(found[0]) if found else 0
