"""gRPC transport: the ``tierwise.v1.Router`` servicer over ``RouteService``, health, reflection."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from router_model.settings import ServerLimits, ServiceSettings
from service.router.core import RouteService
from service.router.transport import convert
from service.shared.errors import error_code, public_detail, spec_for

logger = logging.getLogger(__name__)

ROUTER_SERVICE = pb.DESCRIPTOR.services_by_name["Router"].full_name
ERROR_DOMAIN = "tierwise"

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, Any], Awaitable[Resp]]


async def abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """End the call with the table's status code; the stable error code rides along as ErrorInfo.

    Raises:
        grpc.aio.AbortError: always (that is how grpc.aio ends a call).
    """
    spec = spec_for(exc)
    if spec.grpc_code is grpc.StatusCode.INTERNAL:
        logger.error("gRPC call failed", exc_info=exc)
    detail = public_detail(exc)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error_code(exc), domain=ERROR_DOMAIN))
    status = status_pb2.Status(code=spec.grpc_code.value[0], message=detail, details=[info])
    trailers = rpc_status.to_status(status).trailing_metadata
    await context.abort(spec.grpc_code, detail, trailing_metadata=trailers)


def _boundary(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map every error a handler raises through ``ERROR_MAP`` (the transport boundary)."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises

    return wrapped


class RouterServicer(router_pb2_grpc.RouterServicer):
    """``tierwise.v1.Router``: convert in, call the core, convert out."""

    def __init__(self, route_service: RouteService) -> None:
        self._service = route_service

    @_boundary
    async def Route(self, request: pb.RouteRequest, context: Any) -> pb.RouteResponse:  # noqa: N802
        result = await self._service.route(
            convert.route_input_from_pb(request), transport="grpc",
            timeout_s=context.time_remaining(),
        )
        return convert.route_response_pb(result)

    @_boundary
    async def RouteBatch(  # noqa: N802
        self, request: pb.RouteBatchRequest, context: Any
    ) -> pb.RouteBatchResponse:
        inputs = [convert.route_input_from_pb(r) for r in request.requests]
        results = await self._service.route_batch(
            inputs, transport="grpc", timeout_s=context.time_remaining()
        )
        return convert.batch_response_pb(results)

    @_boundary
    async def ListTiers(  # noqa: N802
        self, request: pb.ListTiersRequest, context: Any
    ) -> pb.ListTiersResponse:
        return convert.tiers_pb(self._service.tiers)

    @_boundary
    async def GetModel(self, request: pb.GetModelRequest, context: Any) -> pb.ModelInfo:  # noqa: N802
        return convert.model_info_pb(self._service.manifest, self._service.tiers)


class MalformedRequests(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answer INVALID_ARGUMENT to a unary request whose bytes are not its protobuf message.

    Why: grpc.aio parses the request before any handler runs, and a parse error there ends the
    call with UNKNOWN plus an ERROR traceback in the log for every garbage frame a client sends.
    Here the handler receives the raw bytes and parses them itself.
    """

    def __init__(self) -> None:
        # method name -> its wrapped handler: the handlers are registered once, so wrapping
        # them again on every call (4 us warm, against 1 us for the lookup) buys nothing; unknown
        # methods are not kept
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        wrapped = self._wrapped.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        parse, behavior = handler.request_deserializer, handler.unary_unary

        async def parsed(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except DecodeError:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "the request is not a valid protobuf message")
            return await behavior(request, context)

        wrapped = self._wrapped[details.method] = grpc.unary_unary_rpc_method_handler(
            parsed, response_serializer=handler.response_serializer)
        return wrapped


class ReadinessHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """gRPC health that follows the core: NOT_SERVING until a bundle is loaded and from drain on."""

    def __init__(self, route_service: RouteService) -> None:
        super().__init__()
        self._route_service = route_service
        route_service.add_readiness_listener(self.follow)

    async def follow(self, ready: bool) -> None:
        """Publish ``ready`` for the server and the Router service (watchers are notified)."""
        if self._route_service.draining:
            await self.enter_graceful_shutdown()
            return
        status = health_pb2.HealthCheckResponse.SERVING if ready else (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", ROUTER_SERVICE):
            await self.set(name, status)

    async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self.follow(self._route_service.ready)
        return await super().Check(request, context)

    async def Watch(self, request: Any, context: Any) -> None:  # noqa: N802
        await self.follow(self._route_service.ready)
        await super().Watch(request, context)


def grpc_limits(limits: ServerLimits) -> list[tuple[str, int]]:
    """The gRPC core options of ``limits``: streams per connection, keepalive, idle close,
    the handshake deadline."""
    return [
        ("grpc.max_concurrent_streams", limits.grpc_max_concurrent_streams),
        ("grpc.keepalive_time_ms", round(limits.grpc_keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(limits.header_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", round(limits.grpc_max_connection_idle_s * 1000)),
        # a connection that never completes its HTTP/2 handshake (idle, half-open) is closed
        ("grpc.server_handshake_timeout_ms", round(limits.header_timeout_s * 1000)),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.max_metadata_size", limits.max_header_bytes),
    ]


def create_grpc_server(
    settings: ServiceSettings, route_service: RouteService
) -> tuple[grpc.aio.Server, int]:
    """A gRPC server with the Router service, health checking and reflection, bound not started.

    Returns the server and the port it bound (the real one when ``grpc_port`` is 0).

    Raises:
        OSError: when the address cannot be bound.
    """
    server = grpc.aio.server(
        interceptors=[MalformedRequests()],
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 0),
            *grpc_limits(settings.server),
        ],
        maximum_concurrent_rpcs=settings.server.max_in_flight,
    )
    router_pb2_grpc.add_RouterServicer_to_server(  # type: ignore[no-untyped-call]
        RouterServicer(route_service), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealth(route_service), server)
    services = (
        ROUTER_SERVICE,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(services, server)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        port: int = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc reports a failed bind as a bare RuntimeError
        raise OSError(f"cannot bind gRPC to {address}: {exc}") from exc
    return server, port
