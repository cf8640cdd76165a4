"""Decisions from a real gRPC router (``router: address``), fail-open, tier checks, ``main``."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from fake_upstream import closed_port
from gateway_support import (  # noqa: F401  (fixtures)
    HARD,
    KEY_ENV,
    Gateway,
    Upstreams,
    config_doc,
    make_gateway_fixture,
    upstreams_fixture,
)

from router_model.errors import ArtifactMismatch
from router_model.features import featurize
from router_model.policy import Policy
from router_model.records import TrafficRecord
from router_model.router import ComplexityRouter
from router_model.settings import ServiceSettings
from service.gateway.app import create_gateway_app
from service.gateway.assembly import GatewayOptions
from service.gateway.config import parse_gateway_config
from service.gateway.main import main
from service.router.core import RouteService
from service.router.transport.grpc_server import create_grpc_server


def ask(gw: Gateway, quality: float) -> Any:
    raw = gw.client().chat.completions.with_raw_response.create(
        model="tierwise-auto", messages=[{"role": "user", "content": HARD}],
        extra_body={"tierwise": {"quality": quality}},
    )
    return raw, raw.parse()


def traffic(gw: Gateway) -> list[dict[str, Any]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM traffic ORDER BY created_at")]


class GrpcRouter:
    """A ``tierwise`` gRPC router on its own loop in a thread, which a test can stop."""

    def __init__(self, bundle: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = ServiceSettings(host="127.0.0.1", grpc_port=0)
        self.service = RouteService.from_path(settings, bundle)

        async def start() -> tuple[grpc.aio.Server, int]:
            server, port = create_grpc_server(settings, self.service)
            await server.start()
            return server, port

        self.server, port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.address = f"127.0.0.1:{port}"

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.stop(0)
            await self.service.aclose()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture()
def grpc_router(fast_bundle: Path) -> Any:
    router = GrpcRouter(fast_bundle)
    yield router
    if router.thread.is_alive():
        router.stop()


def test_address_mode_routes_like_the_bundle(
    make_gateway: Any, grpc_router: GrpcRouter, fast_bundle: Path
) -> None:
    gw = make_gateway(router={"address": grpc_router.address, "timeout_s": 5})
    local = ComplexityRouter.from_artifact(fast_bundle)
    for quality in (0.0, 0.5, 1.0):
        raw, body = ask(gw, quality)
        want = local.route(HARD, policy=Policy(quality=quality))
        info = body.model_extra["tierwise"]
        assert raw.headers["x-tierwise-tier"] == want.tier and info["source"] == "router"
        assert info["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
    row = traffic(gw)[-1]
    assert row["model_version"] == local.model_version and row["fail_open"] == 0
    vector = TrafficRecord.features_from_blob(row["features"])
    assert vector == [float(x) for x in featurize([HARD], local.featurizer).matrix[0]]


def test_a_budget_is_capped_at_the_remote_routers_default_knob(
    make_gateway: Any, grpc_router: GrpcRouter, fast_bundle: Path
) -> None:
    """The cap of ``budget.top_share`` is the remote router's default (GetModel), as in process."""
    gw = make_gateway(router={"address": grpc_router.address, "timeout_s": 5},
                      budget={"top_share": 1.0, "window": 10, "min_samples": 3})
    threshold = ComplexityRouter.from_artifact(fast_bundle).manifest.threshold
    for quality in (0.0, 0.5, 1.0):
        ask(gw, quality)
    raw = gw.client().chat.completions.with_raw_response.create(
        model="tierwise-auto", messages=[{"role": "user", "content": HARD}])
    assert raw.parse().model_extra["tierwise"]["quality"] == pytest.approx(threshold)


def test_fails_open_when_the_router_dies(make_gateway: Any, grpc_router: GrpcRouter) -> None:
    gw = make_gateway(router={"address": grpc_router.address, "timeout_s": 0.5},
                      default_tier="weak")
    assert ask(gw, 1.0)[0].headers["x-tierwise-tier"] == "strong"
    grpc_router.stop()
    raw, body = ask(gw, 1.0)
    assert raw.headers["x-tierwise-tier"] == "weak"  # default_tier, although quality=1 wants strong
    info = body.model_extra["tierwise"]
    assert info["source"] == "fail_open" and info["fail_open"] is True
    assert info["probabilities"] is None
    row = traffic(gw)[-1]
    assert (row["fail_open"], row["source"], row["router_tier"]) == (1, "fail_open", "")
    with gw.http() as http:
        assert "tierwise_gateway_fail_open_total 1.0" in http.get("/metrics").text


def test_fails_open_when_the_router_is_dead_at_start(make_gateway: Any) -> None:
    gw = make_gateway(router={"address": f"127.0.0.1:{closed_port()}", "timeout_s": 0.2},
                      default_tier="strong")
    for _ in range(3):
        raw, body = ask(gw, 0.0)
        assert raw.headers["x-tierwise-tier"] == "strong"
        assert body.model_extra["tierwise"]["source"] == "fail_open"
    assert [r["fail_open"] for r in traffic(gw)] == [1, 1, 1]


def _start_fails(doc: dict[str, Any]) -> None:
    app = create_gateway_app(parse_gateway_config(doc), GatewayOptions(require_auth=False))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(run())


def test_tier_mismatch_refuses_to_start(
    upstreams: Upstreams, tmp_path: Path, three_tier_bundle: Path, run_service: Any
) -> None:
    doc = config_doc(upstreams, tmp_path, router={"bundle": str(three_tier_bundle)})
    with pytest.raises(ArtifactMismatch, match="routes among models .* config's tiers are"):
        _start_fails(doc)
    remote = run_service(three_tier_bundle)
    doc = config_doc(upstreams, tmp_path, router={"address": remote.grpc_target})
    with pytest.raises(ArtifactMismatch, match=f"router at {remote.grpc_target} routes among"):
        _start_fails(doc)


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture()
def restore_logging() -> Any:
    """``main`` configures the root logger; put the test run's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_main_refuses_bad_configs_and_missing_keys(
    upstreams: Upstreams, tmp_path: Path, fast_bundle: Path, three_tier_bundle: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("TIERWISE_API_KEYS", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    doc = config_doc(upstreams, tmp_path, router={"bundle": str(fast_bundle)})
    del doc["tiers"][1]["base_url"]
    assert main(["--config", str(_write(tmp_path, doc)), "--port", "0"]) == 2
    assert "tiers.1.base_url: Field required" in capsys.readouterr().err
    doc = config_doc(upstreams, tmp_path, router={"bundle": str(fast_bundle)})
    path = _write(tmp_path, doc)
    assert main(["--config", str(path), "--port", "0"]) == 2
    assert "set TIERWISE_API_KEYS" in capsys.readouterr().err
    assert main(["--config", str(path), "--port", "0", "--no-auth"]) == 2
    assert f"upstream key variables not set: {KEY_ENV}" in capsys.readouterr().err
    monkeypatch.setenv(KEY_ENV, "sk-test")
    doc["router"] = {"bundle": str(three_tier_bundle)}
    assert main(["--config", str(_write(tmp_path, doc)), "--port", "0", "--no-auth"]) == 1
    err = capsys.readouterr().err
    assert "routes among models" in err and "sk-test" not in err
    assert main([]) == 2
    assert "no config" in capsys.readouterr().err
