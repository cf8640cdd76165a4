"""The request body limit both HTTP apps put in front of themselves (ASGI middleware).

Each app answers a refusal in its own error shape (the router: RFC 9457 problem+json; the
gateway: OpenAI's envelope), so ``BodyLimit.refuse`` is left to each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` (already read) first, then defers to ``receive``."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class BodyLimit(ABC):
    """Refuses request bodies over ``max_bytes`` with 413, by Content-Length and by actual size.

    The body is read up front (it is at most ``max_bytes``) and replayed to the app, so a chunked
    body without Content-Length cannot slip past the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(scope, receive, send, int(declared))
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self.refuse(scope, receive, send, size)
                return
            more = message.get("more_body", False)
        await self.app(scope, replay_body(b"".join(chunks), receive), send)

    @abstractmethod
    async def refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        """Answer 413 for a body of at least ``size`` bytes, in the app's error shape."""
