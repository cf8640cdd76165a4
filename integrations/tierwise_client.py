"""A small client of the tierwise router service: one chat in, the tier out, within a deadline.

It speaks gRPC (``grpc://host:port``, ``tierwise.v1.Router/Route``) or HTTP (``http://host:port``,
``POST /v1/route``), sync and async. Every failure (unreachable, deadline, refusal, odd answer)
is one ``RouterCallFailed``, so that a caller can fail open on exactly that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc

#: A chat as LiteLLM holds it (OpenAI format): ``content`` is a string, a list of parts or None.
Chat = Sequence[Mapping[str, Any]]


class RouterCallFailed(Exception):
    """The router service gave no usable decision (unreachable, past the deadline, refused)."""


@dataclass(frozen=True)
class RouterAnswer:
    """The part of a routing decision a plug-in uses."""

    tier: str
    model: str
    decision_id: str
    #: The router's own decision time (its core), as it reports it.
    latency_ms: float


def chat_json(messages: Chat) -> list[dict[str, Any]]:
    """The chat as ``/v1/route`` reads it: role and content only (tool calls are not scored)."""
    return [{"role": str(m.get("role", "")), "content": m.get("content")} for m in messages]


def chat_pb(messages: Chat) -> list[pb.ChatMessage]:
    """The chat as ``Route`` reads it: a string content is one text part; other parts keep their
    type and no text (only text parts are scored)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts = [pb.ContentPart(type="text", text=content)]
        elif isinstance(content, list):
            parts = [pb.ContentPart(type=str(p.get("type", "")), text=str(p.get("text") or ""))
                     for p in content if isinstance(p, Mapping)]
        else:
            parts = []
        out.append(pb.ChatMessage(role=str(m.get("role", "")), content=parts))
    return out


class TierwiseClient:
    """Asks the router service for one chat's tier; each call is bounded by ``timeout_s``.

    Connections are made on first use (an async one per event loop it is used from), never in
    ``__init__``.
    """

    def __init__(self, address: str, timeout_s: float, quality: float | None = None) -> None:
        scheme, sep, rest = address.partition("://")
        if not sep or scheme not in ("grpc", "http", "https") or not rest:
            raise ValueError(f"router address {address!r}: want grpc://HOST:PORT or http://HOST:PORT")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._grpc = scheme == "grpc"
        self._target = rest.rstrip("/") if self._grpc else address.rstrip("/")
        self._timeout_s = timeout_s
        self._quality = quality
        self._sync: httpx.Client | grpc.Channel | None = None
        self._async: httpx.AsyncClient | grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        return f"grpc://{self._target}" if self._grpc else self._target

    def _policy_json(self) -> dict[str, Any]:
        return {} if self._quality is None else {"policy": {"quality": self._quality}}

    def _request_pb(self, messages: Chat) -> pb.RouteRequest:
        policy = pb.Policy() if self._quality is None else pb.Policy(quality=self._quality)
        return pb.RouteRequest(messages=chat_pb(messages), policy=policy)

    async def aroute(self, messages: Chat) -> RouterAnswer:
        """The router's decision for ``messages``.

        Raises:
            RouterCallFailed: no decision within ``timeout_s``, or the router refused or failed.
        """
        loop = asyncio.get_running_loop()
        if self._async is None or self._loop is not loop:
            # a client belongs to the loop that made it (the proxy has one; tests make several)
            self._loop = loop
            self._async = (grpc.aio.insecure_channel(self._target) if self._grpc
                           else httpx.AsyncClient(timeout=self._timeout_s))
        try:
            async with asyncio.timeout(self._timeout_s):
                if isinstance(self._async, httpx.AsyncClient):
                    response = await self._async.post(
                        self._target + "/v1/route",
                        json={"messages": chat_json(messages), **self._policy_json()})
                    return _from_json(response)
                stub = router_pb2_grpc.RouterStub(self._async)  # type: ignore[no-untyped-call]
                return _from_pb(await stub.Route(self._request_pb(messages),
                                                 timeout=self._timeout_s))
        except TimeoutError as exc:
            raise RouterCallFailed(f"no decision within {self._timeout_s * 1000:.0f} ms") from exc
        except (httpx.HTTPError, grpc.RpcError) as exc:
            raise RouterCallFailed(f"{type(exc).__name__}: {_brief(exc)}") from exc

    def route(self, messages: Chat) -> RouterAnswer:
        """The router's decision for ``messages`` (blocking).

        Raises:
            RouterCallFailed: no decision within ``timeout_s``, or the router refused or failed.
        """
        if self._sync is None:
            self._sync = (grpc.insecure_channel(self._target) if self._grpc
                          else httpx.Client(timeout=self._timeout_s))
        # blocking HTTP bounds each phase (connect, write, read) by timeout_s; gRPC the whole call
        try:
            if isinstance(self._sync, httpx.Client):
                response = self._sync.post(
                    self._target + "/v1/route",
                    json={"messages": chat_json(messages), **self._policy_json()})
                return _from_json(response)
            stub = router_pb2_grpc.RouterStub(self._sync)  # type: ignore[no-untyped-call]
            return _from_pb(stub.Route(self._request_pb(messages), timeout=self._timeout_s))
        except (httpx.HTTPError, grpc.RpcError) as exc:
            raise RouterCallFailed(f"{type(exc).__name__}: {_brief(exc)}") from exc

    async def aclose(self) -> None:
        """Close the connections (the async one on its own loop, which must be running)."""
        held, self._async = self._async, None
        if isinstance(held, httpx.AsyncClient):
            await held.aclose()
        elif held is not None:
            await held.close()
        self.close()

    def close(self) -> None:
        """Close the blocking connection."""
        held, self._sync = self._sync, None
        if held is not None:
            held.close()


def _brief(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return str(exc.code().name)
    return str(exc) or type(exc).__name__


def _from_json(response: httpx.Response) -> RouterAnswer:
    if response.status_code != 200:
        raise RouterCallFailed(f"router answered HTTP {response.status_code}")
    try:
        doc = response.json()
        return RouterAnswer(str(doc["tier"]), str(doc["model"]), str(doc["decision_id"]),
                            float(doc["latency_ms"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RouterCallFailed(f"odd answer from the router: {exc}") from exc


def _from_pb(response: pb.RouteResponse) -> RouterAnswer:
    return RouterAnswer(response.tier, response.model, response.decision_id,
                        response.latency_ms)
