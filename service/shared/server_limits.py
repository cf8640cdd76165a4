"""Server limits for both services' uvicorn servers: what one client may hold open.

uvicorn (0.55, h11) has no header-read timeout: a connection that never finishes its headers is
kept forever (its keep-alive timer starts only after an answer), so a client opening thousands
of them exhausts the process's descriptors. And headers past h11's buffer limit get a 400
("Invalid HTTP request received."), not 431. ``guarded_protocol`` closes both gaps in a subclass
of uvicorn's h11 protocol:

- a header timer: the request line and headers must be complete ``header_timeout_s`` after the
  connection opened or its previous answer went out, else the connection is closed;
- ``max_header_bytes``: more pending header bytes than that get 431 and the connection closes;
- ``max_connections``: a connection accepted at the cap closes the one that has waited longest
  for a request's headers (an idle, keep-alive or slowloris client) to take its place; only when
  every connection is busy with a request is the new one closed at once. So a flood of idle
  connections cannot keep a well-behaved client out: its connection sends a request at once,
  the flood's have waited longer.

``InFlightLimit`` (ASGI) sheds requests past ``max_in_flight`` with 503 and ``Retry-After``
before any work is done; liveness, readiness and metrics are exempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from router_model.settings import ServerLimits

logger = logging.getLogger(__name__)

#: Paths an overloaded server still answers (probes must not read overload as death).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_LOG_EVERY_S = 10.0


class _RateLimitedLog:
    """At most one warning per ``_LOG_EVERY_S`` for a repeated event, with the count since."""

    def __init__(self, what: str) -> None:
        self.what, self.count, self.last = what, 0, 0.0

    def note(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= _LOG_EVERY_S:
            logger.warning("%s (%d since the last report)", self.what, self.count)
            self.last, self.count = now, 0


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` keyword arguments of ``limits``."""
    return {"http": guarded_protocol(limits), "timeout_keep_alive": limits.keep_alive_s,
            "h11_max_incomplete_event_size": limits.max_header_bytes + 1024}


def guarded_protocol(limits: ServerLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header timer, a 431 and a connection cap (module doc)."""
    refused = _RateLimitedLog(f"connections over max_connections {limits.max_connections} "
                              "closed at accept (every connection busy with a request)")
    evicted = _RateLimitedLog(f"at max_connections {limits.max_connections}: connections "
                              "waiting longest for headers closed to admit new ones")

    #: connections waiting for a request's headers, the longest-waiting first
    waiting: OrderedDict[H11Protocol, None] = OrderedDict()

    class GuardedH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections:
                if not waiting:  # every connection is busy with a request
                    refused.note()
                    transport.abort()
                    return
                oldest, _ = waiting.popitem(last=False)  # it takes the new one's place
                oldest.transport.abort()
                evicted.note()
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            waiting.pop(self, None)
            if self._header_timer is not None:
                self._header_timer.cancel()
            if self in self.connections:
                super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                pending = self.conn.trailing_data[0]
                if len(pending) + len(data) > limits.max_header_bytes:
                    head = (pending + data)[: limits.max_header_bytes + 4]
                    if b"\r\n\r\n" not in head:
                        self._refuse_431()
                        return
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # a whole request line and headers
                waiting.pop(self, None)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._expire)
            waiting.pop(self, None)
            waiting[self] = None

        def _expire(self) -> None:
            # still waiting for a whole request line and headers: a slow or idle client
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def _refuse_431(self) -> None:
            body = json.dumps({"error": {"message": "request headers too large (limit "
                               f"{limits.max_header_bytes} bytes)", "type":
                               "invalid_request_error", "param": None,
                               "code": "headers_too_large"}}).encode()
            head = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-type: application/json\r\nconnection: close\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
            self.transport.write(head + body)
            self.transport.close()

    return GuardedH11


class InFlightLimit:
    """ASGI middleware: at most ``limit`` requests in flight; one more gets 503 + Retry-After."""

    def __init__(self, app: ASGIApp, *, limit: int, retry_after_s: int, body: bytes) -> None:
        self.app, self.limit, self.retry_after = app, limit, str(retry_after_s).encode()
        self.body = body  # the service's own error shape (OpenAI envelope or problem+json)
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.shed += 1
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"retry-after", self.retry_after),
                (b"content-length", str(len(self.body)).encode())]})
            await send({"type": "http.response.body", "body": self.body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
