"""A fake OpenAI-compatible upstream (a real ASGI app on loopback) and a uvicorn-in-a-thread helper.

``FakeUpstream`` answers ``POST /v1/chat/completions`` like OpenAI (JSON or SSE stream) and can be
told to fail (500), rate-limit (429), stall past a timeout, or reject the request (400). It keeps
every request it received, so tests can check what the gateway forwarded. ``closed_port()`` gives
a loopback port nothing listens on (connections are refused).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER_WORDS = ["The", " answer", " is", " forty", "-two", "."]
#: The ``message`` of a choice in the modes that send a malformed one, from the answer's text.
ODD_MESSAGES: dict[str, Callable[[str], Any]] = {
    "string_message": lambda text: text, "null_message": lambda text: None,
}


@dataclass
class FakeUpstream:
    """One upstream's behaviour; change ``mode`` between requests.

    Modes: ``ok``, ``fail`` (500), ``ratelimit`` (429), ``stall`` (sleeps ``stall_s`` before
    answering), ``bad_request`` (400), ``bad_key`` (401 echoing the Authorization
    header, as providers do), ``leaky_400`` (400 whose message echoes it), ``stall_body`` (200
    headers, then a stalled body),
    ``break_stream`` (a stream that is cut after three chunks), ``html`` (200 with an HTML page,
    streams too, as a misconfigured proxy answers), ``not_object`` (200 with a JSON array),
    ``trickle`` (a JSON answer sent ``trickle_bytes`` at a time every ``trickle_s``; a stream
    starts ``trickle_s`` late and sends each chunk ``trickle_s`` after the one before),
    ``string_message`` and ``null_message`` (200 with a completion whose choice's ``message`` is
    its text as a bare string, or null: no chat completion; streams are answered as usual).
    """

    name: str
    mode: str = "ok"
    stall_s: float = 5.0
    trickle_s: float = 0.1
    trickle_bytes: int = 20
    send_usage: bool = True
    #: What an answer says: its ``finish_reason``, its text (None: ``ANSWER_WORDS``; a stream
    #: sends a set text as one chunk) and, when set, this logprob for every answer word (in
    #: OpenAI's ``logprobs.content`` form), returned only to a request with ``logprobs: true``,
    #: as OpenAI does.
    finish_reason: str = "stop"
    content: str | None = None
    logprob: float | None = None
    #: How JSON is written: ``ascii`` (a lone surrogate as its escape, ``"\\ud800"``) or
    #: ``cesu`` (UTF-8, a lone surrogate as its three raw bytes, as a CESU-8 encoder writes it).
    encoding: str = "ascii"
    #: When set, a non-stream answer's text is ``reply(body)`` (a fake judge answers its
    #: grading prompts in the ``Rating: [[N]]`` format this way).
    reply: Callable[[dict[str, Any]], str] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.mode == "fail":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if self.mode == "ratelimit":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429)
        if self.mode == "bad_request":
            return JSONResponse({"error": {"message": "bad", "type": "invalid_request_error",
                                           "param": None, "code": "bad"}}, 400)
        if self.mode == "bad_key":  # as a provider answers a wrong key: it echoes the header
            echo = request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": f"bad key {echo}",
                                           "type": "invalid_request_error"}}, 401)
        if self.mode == "leaky_400":  # a parameter refusal whose text echoes the key
            echo = request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": f"temperature too high ({echo})",
                                           "param": "temperature", "code": "bad"}}, 400)
        if self.mode == "stall":
            await asyncio.sleep(self.stall_s)
        if self.mode == "html":
            return Response("<html>oops</html>", media_type="text/html")
        if self.mode == "not_object":
            return JSONResponse(["oops"])
        if self.mode == "trickle":
            await asyncio.sleep(self.trickle_s)
            if not body.get("stream"):
                data = self.dumps(self.completion(body))
                return StreamingResponse(self._trickled(data), media_type="application/json")
        if body.get("stream"):
            return StreamingResponse(self._chunks(body), media_type="text/event-stream")
        if self.mode == "stall_body":
            return StreamingResponse(self._stalled(), media_type="application/json")
        doc = self.completion(body)
        if self.mode in ODD_MESSAGES:
            choice = doc["choices"][0]
            choice["message"] = ODD_MESSAGES[self.mode](choice["message"]["content"])
        return Response(self.dumps(doc), media_type="application/json")

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": f"chatcmpl-{self.name}-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{
                "index": 0, "finish_reason": self.finish_reason,
                "message": {"role": "assistant", "content": self._text(body)},
            }],
        }
        if self.logprob is not None and body.get("logprobs"):
            doc["choices"][0]["logprobs"] = {"content": [
                {"token": w, "logprob": self.logprob, "bytes": None, "top_logprobs": []}
                for w in ANSWER_WORDS]}
        if self.send_usage:
            doc["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        return doc

    def _text(self, body: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply(body)
        return "".join(ANSWER_WORDS) if self.content is None else self.content

    def dumps(self, doc: Any) -> bytes:
        if self.encoding == "cesu":
            return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return json.dumps(doc).encode()

    async def _trickled(self, data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), self.trickle_bytes):
            await asyncio.sleep(self.trickle_s)
            yield data[i : i + self.trickle_bytes]

    async def _stalled(self) -> AsyncIterator[bytes]:
        await asyncio.sleep(self.stall_s)
        yield b"{}"

    async def _chunks(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        if self.mode == "stall_body":
            await asyncio.sleep(self.stall_s)
        base = {"id": f"chatcmpl-{self.name}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        words = ANSWER_WORDS if self.content is None else [self.content]
        deltas += [{"content": w} for w in words]
        for i, delta in enumerate(deltas):
            if self.mode == "trickle":
                await asyncio.sleep(self.trickle_s)
            finish = "stop" if i == len(deltas) - 1 else None
            doc = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            yield b"data: " + self.dumps(doc) + b"\n\n"
            if self.mode == "break_stream" and i == 2:
                raise ConnectionAbortedError("the fake upstream drops the stream mid-way")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            yield b"data: " + self.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"


def closed_port() -> int:
    """A loopback port with nothing listening (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class ServerThread:
    """A uvicorn server running an app in a background thread."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_server(app: Any, *, lifespan: str = "off", **options: Any) -> ServerThread:
    """Serve ``app`` on a pre-bound ``127.0.0.1:0`` socket from a thread; returns once it is up.
    ``options`` are more ``uvicorn.Config`` arguments.

    Raises:
        RuntimeError: when the app does not start (for example its lifespan hook raised).
    """
    sock = socket.create_server(("127.0.0.1", 0))
    # accepted sockets inherit it; without it Nagle + delayed ACK add ~40 ms per keep-alive call
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("server did not start")
        time.sleep(0.005)
    return ServerThread(f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread)


@contextmanager
def serving(app: Any, *, lifespan: str = "off") -> Iterator[str]:
    """``start_server`` as a context manager yielding the base URL."""
    st = start_server(app, lifespan=lifespan)
    try:
        yield st.url
    finally:
        st.stop()
