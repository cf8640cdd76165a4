"""Upstream answers that say 200 but are not usable: a body that is not a JSON object or whose
choices are not objects with an object ``message``, a stream that is not an event stream. They are
upstream failures: counted by the breaker, failed over (within the request's tiers), and a 502
(recorded) when no tier is left."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    EASY,
    STRONG,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    tier_docs,
    upstreams_fixture,
)


def post(gw: Gateway, *, stream: bool = False, knob: dict[str, Any] | None = None) -> Any:
    body = {"model": "tierwise-auto", "stream": stream,
            "tierwise": {"quality": 0.0, **(knob or {})},
            "messages": [{"role": "user", "content": EASY}]}
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    return response


def statuses(gw: Gateway) -> list[tuple[int, str, int]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT status, tier, failovers FROM traffic").fetchall()


def weak_timeout(ups: Upstreams, timeout_s: float) -> list[dict[str, Any]]:
    return tier_docs(ups, weak={"timeout_s": timeout_s})


def events(response: httpx.Response) -> list[bytes]:
    return [e for e in response.content.split(b"\n\n") if e]


@pytest.mark.parametrize("mode", ["html", "not_object", "string_message", "null_message"])
def test_a_body_that_is_not_a_completion_object_fails_over(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, mode: str
) -> None:
    gw = make_gateway(fast_bundle, failover={"failure_threshold": 1, "cooldown_s": 30})
    upstreams.weak.mode = mode
    response = post(gw)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == STRONG and response.headers["x-tierwise-failovers"] == "1"
    assert gw.completions.upstreams.breakers["weak"].state == "open"  # counted as a failure
    with gw.http() as http:
        metrics = http.get("/metrics").text
    assert 'tierwise_gateway_upstream_failures_total{reason="invalid_body",tier="weak"} 1.0' in (
        metrics)
    assert statuses(gw) == [(200, "strong", 1)]


def test_a_stream_that_is_not_an_event_stream_fails_over(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle, failover={"failure_threshold": 1, "cooldown_s": 30})
    upstreams.weak.mode = "html"
    response = post(gw, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"oops" not in response.content and events(response)[-1] == b"data: [DONE]"
    first = json.loads(events(response)[0].removeprefix(b"data: "))
    assert first["model"] == STRONG and first["tierwise"]["failovers"] == 1
    assert gw.completions.upstreams.breakers["weak"].state == "open"
    assert statuses(gw) == [(200, "strong", 1)]


@pytest.mark.parametrize(("stream", "mode"), [
    (False, "html"), (True, "html"), (False, "string_message"), (False, "null_message")])
def test_no_usable_answer_left_is_a_502(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, stream: bool, mode: str
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.weak.mode = mode
    response = post(gw, stream=stream, knob={"max_tier": "weak"})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("api_error", "upstream_error")
    assert "weak: invalid_body" in error["message"] and "oops" not in response.text
    assert upstreams.strong.requests == []
    assert statuses(gw) == [(502, "", 0)]


def test_timeout_s_is_a_deadline_for_the_whole_answer(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle, tiers=weak_timeout(upstreams, 1.0))
    upstreams.weak.mode, upstreams.weak.trickle_s = "trickle", 0.1  # ~20 bytes every 0.1 s
    started = time.monotonic()
    response = post(gw)
    took = time.monotonic() - started
    assert response.status_code == 200 and response.json()["model"] == STRONG
    assert response.headers["x-tierwise-failovers"] == "1"
    assert 1.0 <= took < 3.0, took  # the deadline, not a read timeout (each read took 0.1 s)
    with gw.http() as http:
        assert 'reason="timeout",tier="weak"} 1.0' in http.get("/metrics").text


def test_timeout_s_bounds_a_streams_first_chunk(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle, tiers=weak_timeout(upstreams, 0.5))
    # headers after 0.3 s, the first chunk 0.3 s later: each wait under 0.5 s, the sum over it
    upstreams.weak.mode, upstreams.weak.trickle_s = "trickle", 0.3
    response = post(gw, stream=True)
    first = json.loads(events(response)[0].removeprefix(b"data: "))
    assert first["model"] == STRONG and first["tierwise"]["failovers"] == 1
    upstreams.weak.trickle_s = 0.1  # a stream that starts within the deadline is not cut
    response = post(gw, stream=True)
    assert json.loads(events(response)[0].removeprefix(b"data: "))["model"] != STRONG
    assert events(response)[-1] == b"data: [DONE]"
