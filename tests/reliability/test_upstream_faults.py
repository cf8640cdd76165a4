"""Upstream faults under concurrent load, and upstreams that drop the TCP connection mid-answer.

Single-request failover on 500/429/timeout/refused, breakers, and an ASGI-level broken stream are
covered by ``tests/integration/test_gateway_failover.py``; here the same faults hit 8 concurrent
clients, and a raw TCP upstream cuts its connection (RST) after the first bytes.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import closed_port
from gateway_support import STRONG, Gateway, Upstreams, tier_docs

REQUESTS, CLIENTS = 24, 8
WEAKEST = {"quality": 0.0}


def tiers(ups: Upstreams, weak_url: str | None = None, weak_timeout: float = 1.0) -> Any:
    return tier_docs(ups, weak={"base_url": weak_url or ups.weak_url, "timeout_s": weak_timeout})


def rows(gw: Gateway) -> list[dict[str, Any]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM traffic")]


def body(i: int, stream: bool = False, model: str = "tierwise-auto") -> dict[str, Any]:
    return {"model": model, "stream": stream, "tierwise": WEAKEST,
            "messages": [{"role": "user", "content": f"What is {i} + {i}?"}]}


def load(gw: Gateway) -> list[tuple[int, str, bool]]:
    """REQUESTS requests (every third streamed) from CLIENTS threads: (status, tier, complete)."""

    def one(http: httpx.Client, i: int) -> tuple[int, str, bool]:
        stream = i % 3 == 0
        with http.stream("POST", "/v1/chat/completions", json=body(i, stream)) as response:
            data = response.read()
        complete = data.rstrip().endswith(b"[DONE]") if stream else b'"choices"' in data
        return response.status_code, response.headers.get("x-tierwise-tier", ""), complete

    with gw.http() as http, ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda i: one(http, i), range(REQUESTS)))


FAULTS = [
    ("fail", "500 Internal Server Error"),
    ("ratelimit", "429 Too Many Requests"),
    ("stall", "hangs 2 s, past the tier's 0.3 s timeout"),
    ("refused", "refuses connections (nothing listens)"),
]


@pytest.mark.parametrize(
    "mode",
    [pytest.param(mode, id=mode, marks=pytest.mark.reliability(
        scenario=f"Upstream {what}",
        action=f"the weak tier's upstream {what}; {REQUESTS} requests (1/3 streamed) from "
               f"{CLIENTS} concurrent clients, all routed to weak",
        expected="every request answered by the strong tier, each one recorded"))
     for mode, what in FAULTS],
)
def test_upstream_fault_under_load(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, mode: str, observed: Any
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1" if mode == "refused" else None
    gw = make_gateway(fast_bundle, tiers=tiers(upstreams, dead, weak_timeout=0.3))
    if mode != "refused":
        upstreams.weak.mode, upstreams.weak.stall_s = mode, 2.0
    results = load(gw)
    assert results == [(200, "strong", True)] * REQUESTS
    records = rows(gw)
    assert len(records) == REQUESTS
    assert {(r["status"], r["decided_tier"], r["tier"], r["failovers"]) for r in records} == {
        (200, "weak", "strong", 1)}
    tried = len(upstreams.weak.requests)
    breaker = gw.completions.upstreams.breakers["weak"].state
    observed(f"answered {len(results)}/{REQUESTS} by strong, {len(records)} records "
             f"(status 200, failovers=1); weak upstream saw {tried} requests, breaker {breaker}")


class CuttingUpstream:
    """A raw TCP "upstream" that answers 200, sends part of the body, then resets the connection.

    ``stream``: SSE headers and the first event, then RST. Otherwise: a JSON response whose
    ``Content-Length`` promises more than is sent, then RST.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += conn.recv(65536)
        request = json.loads(rest)
        if request.get("stream"):
            event = {"id": "x", "object": "chat.completion.chunk", "model": request["model"],
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "The"},
                                  "finish_reason": None}]}
            payload = f"data: {json.dumps(event)}\n\n".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n"
                         + f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 400\r\n\r\n" + b'{"id": "x", "choices": [')
        # SO_LINGER 0: close() sends RST, as a crashed or killed upstream process would
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def cutting() -> Iterator[CuttingUpstream]:
    upstream = CuttingUpstream()
    yield upstream
    upstream.close()


@pytest.mark.reliability(
    scenario="Upstream resets the connection mid-stream",
    action="the weak upstream sends 200 + the first SSE event of a stream, then a TCP RST; "
           "8 such streams at once, then normal requests",
    expected="each client gets the first event, then an error event and a clean end (no "
             "[DONE]); each record has status 502; each cut counts against the weak upstream's "
             "breaker (open after failure_threshold 8); the gateway keeps serving")
def test_connection_reset_mid_stream(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, cutting: CuttingUpstream,
    observed: Any,
) -> None:
    # threshold 8: all 8 streams get through whichever breaks first, and together open it
    gw = make_gateway(fast_bundle, tiers=tiers(upstreams, cutting.url),
                      failover={"failure_threshold": 8, "cooldown_s": 30})

    def one(http: httpx.Client, i: int) -> tuple[int, list[Any], str]:
        with http.stream("POST", "/v1/chat/completions", json=body(i, True, "weak")) as r:
            events = [e for e in r.read().split(b"\n\n") if e]
            return r.status_code, events, r.headers["x-tierwise-decision-id"]

    with gw.http() as http, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: one(http, i), range(8)))
        after = [http.post("/v1/chat/completions", json=body(i, i % 2 == 1, STRONG))
                 for i in range(4)]
    by_id = {r["decision_id"]: r for r in rows(gw)}
    for status, events, decision in results:
        assert status == 200 and len(events) == 2
        first = json.loads(events[0].removeprefix(b"data: "))
        last = json.loads(events[1].removeprefix(b"data: "))
        assert first["choices"][0]["delta"]["content"] == "The"
        assert last["error"]["code"] == "upstream_error"
        assert by_id[decision]["status"] == 502 and by_id[decision]["tier"] == "weak"
    assert [r.status_code for r in after] == [200] * 4
    assert all(b"[DONE]" in r.content for r in after[1::2])
    assert len(upstreams.strong.requests) == 4  # no failover once bytes were sent
    # a cut after the first byte is an upstream failure to the breaker, even with no failover
    breaker = gw.completions.upstreams.breakers["weak"].state
    assert breaker == "open"
    with gw.http() as http:
        counted = [line.rsplit(" ", 1)[1] for line in http.get("/metrics").text.splitlines()
                   if line.startswith('tierwise_gateway_upstream_failures_total{reason="stream_')]
    assert counted == ["8.0"]
    observed(f"8/8 streams: first event, error event, no [DONE]; 8 records status 502; then "
             f"4/4 requests (2 streamed) answered; 8 stream_broken failures, weak breaker "
             f"{breaker}")


@pytest.mark.reliability(
    scenario="Upstream resets the connection mid-body (non-streamed)",
    action="the weak upstream sends 200 with Content-Length 400, 24 bytes, then a TCP RST",
    expected="the gateway fails over before answering: the client gets the strong tier's "
             "answer; record status 200, failovers=1")
def test_connection_reset_mid_body_fails_over(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, cutting: CuttingUpstream,
    observed: Any,
) -> None:
    gw = make_gateway(fast_bundle, tiers=tiers(upstreams, cutting.url))
    with gw.http() as http:
        responses = [http.post("/v1/chat/completions", json=body(i)) for i in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.headers["x-tierwise-tier"] for r in responses] == ["strong", "strong"]
    records = rows(gw)
    assert Counter((r["status"], r["tier"], r["failovers"]) for r in records) == {
        (200, "strong", 1): 2}
    observed(f"2/2 answered by strong after the cut (weak accepted {cutting.accepted} "
             "connections); records status 200, failovers=1")
