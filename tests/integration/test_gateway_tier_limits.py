"""A request's tier limits (``min_tier``, ``max_tier``, ``allowed_tiers``) bind failover,
fail-open and fixed A/B arms: no answer ever comes from a tier the request excluded. A named
model (pass-through) is the strictest limit: that model or an error, and no routing savings."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import closed_port
from gateway_support import (  # noqa: F401  (fixtures)
    ADMIN_KEY,
    EASY,
    STRONG,
    WEAK,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)

ONLY_WEAK = [{"max_tier": "weak"}, {"allowed_tiers": ["weak"]}]
ONLY_STRONG = [{"min_tier": "strong"}, {"allowed_tiers": ["strong"]}]


def post(gw: Gateway, knob: dict[str, Any] | None, *, stream: bool = False,
         text: str = EASY, model: str = "tierwise-auto") -> httpx.Response:
    body: dict[str, Any] = {"model": model, "stream": stream,
                            "messages": [{"role": "user", "content": text}]}
    if knob is not None:
        body["tierwise"] = knob
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=body)
        response.read()
    return response


def rows(gw: Gateway) -> list[dict[str, Any]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM traffic ORDER BY created_at")]


def assert_upstream_error(response: httpx.Response) -> None:
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("api_error", "upstream_error")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("knob", ONLY_WEAK)
def test_failover_never_climbs_past_max_tier(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, knob: dict[str, Any],
    stream: bool,
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.weak.mode = "fail"
    response = post(gw, {**knob, "quality": 1.0}, stream=stream)
    assert_upstream_error(response)
    assert "weak: status 500" in response.json()["error"]["message"]
    assert len(upstreams.weak.requests) == 1 and upstreams.strong.requests == []
    assert [(r["status"], r["tier"], r["decided_tier"]) for r in rows(gw)] == [(502, "", "weak")]


@pytest.mark.parametrize("knob", ONLY_STRONG)
def test_failover_never_drops_below_min_tier(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, knob: dict[str, Any]
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.strong.mode = "fail"
    assert_upstream_error(post(gw, {**knob, "quality": 0.0}))
    assert upstreams.weak.requests == [] and len(upstreams.strong.requests) == 1


def test_failover_within_the_allowed_tiers_still_happens(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.weak.mode = "fail"
    response = post(gw, {"allowed_tiers": ["weak", "strong"], "quality": 0.0})
    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "strong"
    assert response.headers["x-tierwise-failovers"] == "1"


@pytest.mark.parametrize("knob", ONLY_WEAK)
def test_fail_open_uses_an_allowed_tier_when_the_router_is_dead(
    make_gateway: Any, upstreams: Upstreams, knob: dict[str, Any]
) -> None:
    gw = make_gateway(router={"address": f"127.0.0.1:{closed_port()}", "timeout_s": 0.2},
                      default_tier="strong")
    response = post(gw, knob)
    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-source"] == "fail_open"
    assert response.headers["x-tierwise-tier"] == "weak" and upstreams.strong.requests == []
    assert response.json()["tierwise"]["decided_tier"] == "weak"
    upstreams.weak.mode = "fail"  # and the fail-open tier's failover keeps to the limits too
    assert_upstream_error(post(gw, knob))
    assert upstreams.strong.requests == []
    assert [(r["source"], r["decided_tier"], r["status"]) for r in rows(gw)] == [
        ("fail_open", "weak", 200), ("fail_open", "weak", 502)]


def test_fail_open_on_a_prompt_too_long_to_score_keeps_to_max_tier(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    # the gateway's own cap (limits.max_scored_chars, 413 by default at the router's 200,000)
    # raised, so the router is the one that cannot score it
    gw = make_gateway(fast_bundle, default_tier="strong",
                      limits={"max_scored_chars": 1_000_000})
    response = post(gw, {"max_tier": "weak"}, text="word " * 40_001)  # > 200,000 characters
    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-source"] == "fail_open"
    assert response.headers["x-tierwise-tier"] == "weak" and upstreams.strong.requests == []


def test_limits_that_leave_no_tier_are_a_400(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    response = post(gw, {"min_tier": "strong", "max_tier": "weak"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "leave no tier" in response.json()["error"]["message"]


def test_a_fixed_arm_keeps_to_the_requests_limits(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    ab = {"arms": [{"name": "always_strong", "tier": "strong", "weight": 1}]}
    gw = make_gateway(fast_bundle, ab=ab)
    unlimited = post(gw, {"quality": 0.0})
    assert unlimited.headers["x-tierwise-tier"] == "strong"  # the arm's own tier
    limited = post(gw, {"max_tier": "weak"})
    assert limited.status_code == 200
    assert (limited.headers["x-tierwise-arm"], limited.headers["x-tierwise-source"]) == (
        "always_strong", "fixed_arm")
    assert limited.headers["x-tierwise-tier"] == "weak"
    assert len(upstreams.strong.requests) == 1 and len(upstreams.weak.requests) == 1
    record = rows(gw)[-1]
    assert (record["arm"], record["decided_tier"], record["tier"], record["propensity"]) == (
        "always_strong", "weak", "weak", 1.0)
    assert record["model"] == WEAK


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "failing"), [(STRONG, "strong"), ("weak", "weak"),
                                                (WEAK, "weak")])
def test_a_named_model_never_fails_over(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, model: str, failing: str,
    stream: bool,
) -> None:
    gw = make_gateway(fast_bundle)
    down, up = ((upstreams.strong, upstreams.weak) if failing == "strong"
                else (upstreams.weak, upstreams.strong))
    down.mode = "fail"
    response = post(gw, None, model=model, stream=stream)
    assert_upstream_error(response)
    assert len(down.requests) == 1 and up.requests == []
    assert [(r["source"], r["status"], r["tier"]) for r in rows(gw)] == [
        ("passthrough", 502, "")]


def test_pass_through_saves_nothing_by_routing(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle, cache={"enabled": True})
    for _ in range(2):  # an upstream answer, then the same request from the cache
        info = post(gw, None, model=WEAK).json()["tierwise"]
        assert info["routing_savings_usd"] == pytest.approx(0.0, abs=1e-12)
    assert (info["cache"], info["cost_usd"]) == ("exact", 0.0)
    assert info["savings_usd"] == pytest.approx(1.08e-05)  # the cache saved the weak answer
    first = rows(gw)[0]
    assert first["top_tier_cost_usd"] == pytest.approx(first["cost_usd"])  # the named model's
    with gw.http(ADMIN_KEY) as http:
        report = http.get("/v1/admin/savings").json()
    assert report["total"]["levers"]["routing"] == pytest.approx(0.0, abs=1e-12)
    assert report["total"]["levers"]["cache"] == pytest.approx(1.08e-05)
    routed = post(gw, {"quality": 0.0}, text="a routed request").json()["tierwise"]
    assert routed["routing_savings_usd"] > 0  # routing still counts where the router chose
    with gw.http(ADMIN_KEY) as http:
        report = http.get("/v1/admin/savings").json()
    assert report["total"]["levers"]["routing"] == pytest.approx(routed["routing_savings_usd"])
