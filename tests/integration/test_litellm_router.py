"""The LiteLLM routing strategy in a real ``litellm.Router``, asking a real router service.

The router service serves the shipped fast bundle on loopback (HTTP and gRPC); the deployments are
fake OpenAI upstreams. A request goes to the deployment of the tier the router service chooses
for the same chat, and fails open to the configured tier when the service is down or slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("litellm_support")  # sets LiteLLM's offline switch before litellm loads
litellm = pytest.importorskip("litellm", reason="the LiteLLM plug-in needs tierwise[litellm]")

from fake_upstream import FakeUpstream, closed_port, start_server  # noqa: E402
from litellm_support import CHATS, GROUP, Upstreams, tier_upstreams  # noqa: E402

from integrations.litellm_tierwise import (  # noqa: E402
    TierwiseOptions,
    TierwiseRoutingStrategy,
)
from integrations.tierwise_client import TierwiseClient  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "data" / "models" / "routellm_fast"


@pytest.fixture(scope="module")
def service(run_service: Any) -> Any:
    return run_service(BUNDLE)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with tier_upstreams() as ups:
        yield ups


def ask(router: Any, strategy: TierwiseRoutingStrategy, text: str) -> Any:
    async def run() -> Any:
        try:
            return await router.acompletion(
                model=GROUP, messages=[{"role": "user", "content": text}])
        finally:
            await strategy.aclose()
    return asyncio.run(run())


def timed_picks(strategy: TierwiseRoutingStrategy) -> list[float]:
    """Seconds each of the strategy's decisions took: the fail-open deadline is on the decision,
    not on the whole LiteLLM call (whose first call on a loaded machine spends seconds loading)."""
    seconds: list[float] = []
    apick = strategy.picker.apick

    async def timed(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return await apick(*args)
        finally:
            seconds.append(time.perf_counter() - start)
    strategy.picker.apick = timed  # type: ignore[method-assign]
    return seconds


def routed(upstreams: Upstreams, address: str, timeout_s: float = 1.0) -> tuple[Any, Any]:
    router = litellm.Router(model_list=upstreams.model_list())
    options = TierwiseOptions(router=address, groups=(GROUP,), fail_open="auto-strong",
                              timeout_s=timeout_s)
    return router, TierwiseRoutingStrategy(router, options).install()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_request_goes_to_the_tier_the_router_chose(
    service: Any, upstreams: Upstreams, transport: str
) -> None:
    address = f"grpc://{service.grpc_target}" if transport == "grpc" else service.http_url
    router, strategy = routed(upstreams, address)
    seen = set()
    for text in CHATS:
        expected = httpx.post(f"{service.http_url}/v1/route", json={
            "messages": [{"role": "user", "content": text}]}, timeout=10).json()["tier"]
        upstreams.clear()
        response = ask(router, strategy, text)
        assert response.choices[0].message.content == "The answer is forty-two."
        assert upstreams.served_by() == expected, text
        seen.add(expected)
    assert seen == {"weak", "strong"}  # both ways of naming a tier's deployment were used


def test_other_groups_route_as_litellm_would(service: Any, upstreams: Upstreams) -> None:
    router, strategy = routed(upstreams, f"grpc://{service.grpc_target}")
    router.set_model_list([*upstreams.model_list(), {
        "model_name": "plain", "litellm_params": {
            "model": "openai/plain", "api_base": upstreams.weak_url, "api_key": "sk-fake"}}])
    strategy.install()  # set_model_list resets a custom strategy
    upstreams.clear()

    async def run() -> Any:
        return await router.acompletion(model="plain", messages=[{"role": "user",
                                                                   "content": "hi"}])
    asyncio.run(run())
    assert upstreams.weak.requests[-1]["model"] == "plain"


def test_router_down_fails_open_and_says_so(
    upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    for address in (f"grpc://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"):
        router, strategy = routed(upstreams, address, timeout_s=0.5)
        picks = timed_picks(strategy)
        upstreams.clear()
        with caplog.at_level(logging.WARNING, "integrations.litellm_tierwise"):
            ask(router, strategy, CHATS[0])
        assert upstreams.served_by() == "strong"
        assert len(picks) == 1 and picks[0] < 0.5 + 0.3, picks  # the deadline, plus scheduling
        assert "fails open to auto-strong" in caplog.text


def test_slow_router_fails_open_within_the_deadline(
    upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    slow = FakeUpstream("slow-router", mode="stall", stall_s=5.0)
    app = slow.app()
    app.add_route("/v1/route", slow.chat, methods=["POST"])
    server = start_server(app)
    try:
        router, strategy = routed(upstreams, server.url, timeout_s=0.2)
        picks = timed_picks(strategy)
        upstreams.clear()
        with caplog.at_level(logging.WARNING, "integrations.litellm_tierwise"):
            ask(router, strategy, CHATS[0])
        assert upstreams.served_by() == "strong"
        assert len(picks) == 1 and 0.2 <= picks[0] < 0.2 + 0.3, picks  # waited the deadline only
        assert "no decision within 200 ms" in caplog.text
    finally:
        server.stop()


def test_blocking_completion_is_routed_too(service: Any, upstreams: Upstreams) -> None:
    router, strategy = routed(upstreams, f"grpc://{service.grpc_target}")
    for text in CHATS[:2]:
        expected = TierwiseClient(f"grpc://{service.grpc_target}", 5.0).route(
            [{"role": "user", "content": text}]).tier
        upstreams.clear()
        router.completion(model=GROUP, messages=[{"role": "user", "content": text}])
        assert upstreams.served_by() == expected
    strategy.picker.client.close()
