"""Failover across tiers (5xx, 429, timeout, refused connection), circuit breakers, and streams."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from fake_upstream import closed_port
from gateway_support import (  # noqa: F401  (fixtures)
    EASY,
    STRONG,
    WEAK,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    tier_docs,
    upstreams_fixture,
)

WEAKEST = {"tierwise": {"quality": 0.0}}
STRONGEST = {"tierwise": {"quality": 1.0}}


def chat(text: str = EASY) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def record(gw: Gateway, decision_id: str) -> dict[str, Any]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM traffic WHERE decision_id = ?", (decision_id,)).fetchone()
    assert row is not None
    return dict(row)


def ask(gw: Gateway, extra: dict[str, Any] = WEAKEST, model: str = "tierwise-auto") -> Any:
    raw = gw.client().chat.completions.with_raw_response.create(
        model=model, messages=chat(), extra_body=extra
    )
    return raw, raw.parse()


@pytest.mark.parametrize("mode", ["fail", "ratelimit", "stall"])
def test_failover_up(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, mode: str
) -> None:
    gw = make_gateway(fast_bundle, tiers=tier_docs(upstreams, weak={"timeout_s": 0.3}))
    upstreams.weak.mode, upstreams.weak.stall_s = mode, 2.0
    raw, body = ask(gw)
    assert raw.headers["x-tierwise-tier"] == "strong" and body.model == STRONG
    info = body.model_extra["tierwise"]
    assert (info["decided_tier"], info["tier"], info["failovers"]) == ("weak", "strong", 1)
    assert raw.headers["x-tierwise-failovers"] == "1"
    row = record(gw, info["decision_id"])
    assert (row["decided_tier"], row["tier"], row["model"], row["failovers"]) == (
        "weak", "strong", STRONG, 1)
    assert len(upstreams.weak.requests) == len(upstreams.strong.requests) == 1


def test_refused_connection_fails_over(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    gw = make_gateway(fast_bundle, tiers=tier_docs(upstreams, weak={"base_url": dead}))
    raw, body = ask(gw)
    assert raw.headers["x-tierwise-tier"] == "strong" and body.model == STRONG
    with gw.http() as http:
        metrics = http.get("/metrics").text
    assert 'tierwise_gateway_upstream_failures_total{reason="connect_error",tier="weak"} 1.0' in (
        metrics)
    assert "tierwise_gateway_failovers_total 1.0" in metrics


def test_failover_goes_down_from_the_top(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.strong.mode = "fail"
    raw, body = ask(gw, STRONGEST)
    assert body.model_extra["tierwise"]["decided_tier"] == "strong"
    assert raw.headers["x-tierwise-tier"] == "weak" and body.model == WEAK


def test_exhausted_failover_is_a_502(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.weak.mode = upstreams.strong.mode = "fail"
    with pytest.raises(openai.APIStatusError) as err:
        ask(gw)
    assert err.value.status_code == 502
    error = err.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_error"
    assert error["type"] == "api_error" and "weak: status 500" in error["message"]
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        rows = conn.execute("SELECT status, tier, decided_tier FROM traffic").fetchall()
    assert rows == [(502, "", "weak")]


def test_circuit_breaker_opens_and_probes(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle, failover={"failure_threshold": 2, "cooldown_s": 0.5})
    upstreams.weak.mode = "fail"
    for _ in range(2):
        assert ask(gw)[0].headers["x-tierwise-tier"] == "strong"
    assert len(upstreams.weak.requests) == 2
    assert gw.completions.upstreams.breakers["weak"].state == "open"
    raw, body = ask(gw)  # breaker open: weak is skipped without a request
    assert raw.headers["x-tierwise-tier"] == "strong" and len(upstreams.weak.requests) == 2
    assert body.model_extra["tierwise"]["failovers"] == 1
    time.sleep(0.6)
    upstreams.weak.mode = "ok"
    raw, _ = ask(gw)  # half-open: one probe goes to weak, succeeds, closes the breaker
    assert raw.headers["x-tierwise-tier"] == "weak" and len(upstreams.weak.requests) == 3
    assert gw.completions.upstreams.breakers["weak"].state == "closed"


def test_failed_probe_reopens(make_gateway: Any, fast_bundle: Path, upstreams: Upstreams) -> None:
    gw = make_gateway(fast_bundle, failover={"failure_threshold": 1, "cooldown_s": 0.3})
    upstreams.weak.mode = "fail"
    ask(gw)
    time.sleep(0.35)
    ask(gw)  # the probe fails: open again for another cool-down
    assert len(upstreams.weak.requests) == 2
    assert gw.completions.upstreams.breakers["weak"].state == "open"
    ask(gw)
    assert len(upstreams.weak.requests) == 2


@pytest.mark.parametrize("mode", ["fail", "stall_body"])
def test_stream_fails_over_before_the_first_byte(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, mode: str
) -> None:
    gw = make_gateway(fast_bundle, tiers=tier_docs(upstreams, weak={"timeout_s": 0.3}))
    upstreams.weak.mode, upstreams.weak.stall_s = mode, 2.0
    stream = gw.client().chat.completions.create(
        model="tierwise-auto", messages=chat(), stream=True, extra_body=WEAKEST)
    chunks = list(stream)
    assert chunks[0].model == STRONG
    assert chunks[0].model_extra["tierwise"]["tier"] == "strong"
    assert chunks[0].model_extra["tierwise"]["failovers"] == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The answer is forty-two."


def test_stream_cut_mid_way_ends_with_an_error_event(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.weak.mode = "break_stream"
    body = {"model": "weak", "messages": chat(), "stream": True}
    with gw.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [e for e in response.read().split(b"\n\n") if e]
        decision = response.headers["x-tierwise-decision-id"]
    assert len(upstreams.strong.requests) == 0  # bytes were sent: no failover any more
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_error" and b"[DONE]" not in events[-1]
    assert record(gw, decision)["status"] == 502


def stream_events(gw: Gateway, extra: dict[str, Any] = WEAKEST) -> tuple[list[bytes], str]:
    body = {"model": "tierwise-auto", "messages": chat(), "stream": True, **extra}
    with gw.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [e for e in response.read().split(b"\n\n") if e]
        return events, response.headers["x-tierwise-decision-id"]


def upstream_failures(gw: Gateway) -> list[str]:
    with gw.http() as http:
        return [line for line in http.get("/metrics").text.splitlines()
                if line.startswith("tierwise_gateway_upstream_failures_total{")]


def test_a_stream_cut_mid_way_counts_against_the_upstreams_breaker(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)  # failure_threshold 3
    upstreams.weak.mode = "break_stream"  # the role chunk and two words, then the cut
    for i in range(3):
        assert gw.completions.upstreams.breakers["weak"].state == "closed", i
        events, decision = stream_events(gw)
        first = json.loads(events[0].removeprefix(b"data: "))
        assert first["tierwise"]["tier"] == "weak" and len(events) == 4
        last = json.loads(events[-1].removeprefix(b"data: "))
        assert last["error"]["code"] == "upstream_error"  # and no failover: bytes were sent
        assert (record(gw, decision)["status"], record(gw, decision)["tier"]) == (502, "weak")
    assert len(upstreams.weak.requests) == 3 and upstreams.strong.requests == []
    assert gw.completions.upstreams.breakers["weak"].state == "open"
    assert upstream_failures(gw) == [
        'tierwise_gateway_upstream_failures_total{reason="stream_broken",tier="weak"} 3.0']
    upstreams.weak.mode = "ok"
    events, _ = stream_events(gw)  # the breaker is open: weak is skipped, strong answers
    first = json.loads(events[0].removeprefix(b"data: "))
    assert (first["model"], first["tierwise"]["failovers"]) == (STRONG, 1)
    assert events[-1] == b"data: [DONE]" and len(upstreams.weak.requests) == 3


def test_a_stream_the_client_abandons_does_not_count_against_the_upstream(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle, failover={"failure_threshold": 1, "cooldown_s": 30})
    upstreams.weak.mode, upstreams.weak.trickle_s = "trickle", 0.2  # a chunk every 0.2 s
    body = {"model": "tierwise-auto", "messages": chat(), "stream": True, **WEAKEST}
    for _ in range(2):
        with gw.http() as http, http.stream("POST", "/v1/chat/completions",
                                             json=body) as response:
            decision = response.headers["x-tierwise-decision-id"]
            lines = response.iter_lines()
            while not next(lines).startswith("data: "):  # one event, then the client leaves
                pass
        deadline = time.monotonic() + 20
        while not recorded(gw, decision):
            assert time.monotonic() < deadline, "the abandoned stream was never recorded"
            time.sleep(0.05)
        assert record(gw, decision)["status"] == 499
    assert gw.completions.upstreams.breakers["weak"].state == "closed"
    assert upstream_failures(gw) == []


def recorded(gw: Gateway, decision_id: str) -> bool:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT 1 FROM traffic WHERE decision_id = ?",
                            (decision_id,)).fetchone() is not None
