"""Server limits (issue 21): idle and slow connections, oversized headers, too many connections
and too many requests in flight, against the gateway served with the guarded uvicorn protocol
(``service.shared.server_limits``) on loopback."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import start_server
from gateway_support import ADMIN_KEY, CLIENT_KEY, KEY_ENV, UPSTREAM_KEY, Upstreams, config_doc

from router_model.settings import ServerLimits
from service.gateway.app import create_gateway_app
from service.gateway.assembly import GatewayOptions
from service.gateway.config import parse_gateway_config
from service.shared.server_limits import uvicorn_options

CHAT = {"model": "weak", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture()
def guarded(upstreams: Upstreams, tmp_path: Path) -> Iterator[Any]:
    """A factory: ``guarded(ServerLimits)`` -> the base URL of a gateway served with them."""
    started = []
    upstreams.reset()

    def start(limits: ServerLimits) -> str:
        config = parse_gateway_config(config_doc(upstreams, tmp_path))
        options = GatewayOptions(client_keys=(CLIENT_KEY,), admin_key=ADMIN_KEY,
                                 upstream_keys={KEY_ENV: UPSTREAM_KEY}, server=limits)
        st = start_server(create_gateway_app(config, options), lifespan="on",
                          **uvicorn_options(limits))
        started.append(st)
        return st.url

    yield start
    for st in started:
        st.stop()
    upstreams.reset()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _open_idle(port: int, n: int, partial: bool) -> list[socket.socket]:
    """``n`` connections that send nothing, or half a request line and headers (slowloris)."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if partial:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: 1")
        out.append(s)
    return out


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def _closed_now(socks: list[socket.socket]) -> list[bool]:
    """Which of ``socks`` the server has closed, read at once (50 ms for all, not for each)."""
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        readable = {key.fileobj for key, _ in sel.select(timeout=0.05)}
    return [s in readable and _closed_by_server(s) for s in socks]


def _good_p99(url: str, n: int = 20) -> float:
    times = []
    with httpx.Client(base_url=url, headers=AUTH, timeout=10) as http:
        for _ in range(n):
            t = time.perf_counter()
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
            times.append(time.perf_counter() - t)
    return sorted(times)[max(0, int(0.99 * n) - 1)] * 1000


@pytest.mark.reliability(
    scenario="Idle and slowloris connections that never finish their headers",
    action="gateway with header_timeout_s 3 and max_connections 200: 90 idle connections and "
           "90 that send half a request, then 100 more past the cap; a good client meanwhile, "
           "with the cap full of idle connections",
    expected="connections past the cap close the ones waiting longest for headers and take "
             "their place, so the good client is answered while the cap is full; every idle "
             "and half-sent connection is closed by the server after the header timeout")
def test_idle_connections_are_closed(guarded: Any, observed: Any) -> None:
    url = guarded(ServerLimits(header_timeout_s=3.0, max_connections=200))
    base = _good_p99(url)
    start = time.monotonic()
    idle = _open_idle(_port(url), 90, partial=False) + _open_idle(_port(url), 90, partial=True)
    extra = _open_idle(_port(url), 100, partial=False)
    time.sleep(0.3)
    evicted = sum(_closed_now(idle))
    kept = len(extra) - sum(_closed_now(extra))
    full = time.monotonic() - start
    during = _good_p99(url)  # each of its connections takes the place of a waiting one
    assert full < 2.5, f"opening took {full:.1f} s: the header timeout would blur the counts"
    # the cap (200) less the 180 idle leaves 20 places; the other 80 newcomers evict the oldest
    assert evicted >= 70 and kept >= 90, (evicted, kept)
    time.sleep(3.5)
    rest = len(idle + extra) - sum(_closed_now(idle + extra))
    assert rest == 0, f"{rest} still open after the header timeout"
    after = _good_p99(url)
    for s in idle + extra:
        s.close()
    observed(f"good client p99 {base:.1f} ms alone, {during:.1f} ms with the 200-connection cap "
             f"full of idle/half-sent ones, {after:.1f} ms after; 100 past the cap took the "
             f"place of {evicted} waiting longest ({kept}/100 kept); all closed by the 3 s "
             "header timeout")


@pytest.mark.reliability(
    scenario="Oversized request headers",
    action="a request with a 2 MB header, and one with 40 KB of headers (limit 32 KiB)",
    expected="431 in the OpenAI error shape, the connection closed; the next request answered")
def test_oversized_headers_get_431(guarded: Any, observed: Any) -> None:
    url = guarded(ServerLimits())
    statuses = []
    for size in (2_000_000, 40_000):
        with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as s:
            head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: "
                    + b"a" * size + b"\r\n\r\n")
            try:
                s.sendall(head)
            except OSError:
                pass  # the server may close before reading it all
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        assert b"headers_too_large" in answer
        statuses.append(431)
    assert _good_p99(url, 3) > 0
    observed(f"statuses {statuses}; the next request answered 200")


@pytest.mark.reliability(
    scenario="More requests in flight than the gateway takes",
    action="gateway with max_in_flight 4; the weak upstream stalls 0.5 s; 10 concurrent requests",
    expected="4 answered 200, the rest 503 at once with Retry-After in the OpenAI error shape; "
             "/healthz still answers while full")
def test_requests_past_in_flight_limit_are_shed(
    guarded: Any, upstreams: Upstreams, observed: Any
) -> None:
    url = guarded(ServerLimits(max_in_flight=4))
    upstreams.weak.mode, upstreams.weak.stall_s = "stall", 0.5

    async def burst() -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as http:
            calls = [http.post("/v1/chat/completions", json={**CHAT, "model": "weak"})
                     for _ in range(10)]
            tasks = [asyncio.ensure_future(c) for c in calls]
            await asyncio.sleep(0.2)
            t = time.perf_counter()
            health = await http.get("/healthz")
            assert health.status_code == 200
            return list(await asyncio.gather(*tasks)), (time.perf_counter() - t) * 1000

    responses, _ = asyncio.run(burst())
    shed = [r for r in responses if r.status_code == 503]
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 4 and len(shed) == 6, [r.status_code for r in responses]
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert shed[0].json()["error"]["code"] == "overloaded"
    observed(f"{len(ok)} answered 200, {len(shed)} shed 503 with Retry-After 1; /healthz 200 "
             "while full")
