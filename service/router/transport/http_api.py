"""HTTP transport: FastAPI routes over ``RouteService``; every error is RFC 9457 problem+json."""

from __future__ import annotations

import hmac
import json
import logging
import socket
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from router_model.errors import ModelNotReady, NotFound, PromptTooLarge, RouterError
from router_model.settings import ServiceSettings
from service.router.core import RouteService
from service.router.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.router.transport import convert, schemas
from service.shared.body_limit import BodyLimit, replay_body
from service.shared.errors import (
    PROBLEM_CONTENT_TYPE,
    Unauthorized,
    problem_body,
    problem_for,
    spec_for,
)
from service.shared.server_limits import InFlightLimit

logger = logging.getLogger(__name__)


async def get_route_service(request: Request) -> RouteService:
    """The app's ``RouteService`` (set by ``create_app``).

    ``async`` so that FastAPI calls it on the event loop: a plain ``def`` dependency runs on a
    worker thread, a hop that costs more than the whole decision of a hand-feature bundle.
    """
    service: RouteService = request.app.state.route_service
    return service


RouteServiceDep = Annotated[RouteService, Depends(get_route_service)]
_bearer = HTTPBearer(auto_error=False, description="settings.service.admin_key")


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Admin endpoints need ``Authorization: Bearer <admin_key>``; without a key they are off.

    Raises:
        NotFound: when no admin key is configured (the endpoints do not exist then).
        Unauthorized: when the bearer key is missing or wrong.
    """
    key: str | None = request.app.state.admin_key
    if key is None:
        raise NotFound("admin endpoints are disabled: no admin key is configured")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin key>'")


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        s: {"model": schemas.Problem, "content": {PROBLEM_CONTENT_TYPE: {}}} for s in statuses
    }


api = APIRouter()


def _json(model: BaseModel) -> Response:
    # returning the model would have FastAPI validate it into the response model a second time
    # and encode it through jsonable_encoder; it is valid already, so pydantic serialises it once
    return Response(model.model_dump_json(), media_type="application/json")


@api.post(
    "/v1/route",
    tags=["route"],
    response_model=schemas.RouteResponse,
    responses=_problems(400, 413, 422, 429, 503, 504),
)
async def route(body: schemas.RouteRequest, service: RouteServiceDep) -> Response:
    """Decide the cheapest adequate tier for one prompt or chat."""
    result = await service.route(convert.route_input_from_model(body), transport="http")
    return _json(convert.route_response_model(result))


@api.post(
    "/v1/route/batch",
    tags=["route"],
    response_model=schemas.RouteBatchResponse,
    responses=_problems(400, 413, 422, 429, 503, 504),
)
async def route_batch(body: schemas.RouteBatchRequest, service: RouteServiceDep) -> Response:
    """Decide tiers for several requests (all succeed, or the first error is returned)."""
    inputs = [convert.route_input_from_model(r) for r in body.requests]
    results = await service.route_batch(inputs, transport="http")
    return _json(convert.batch_response_model(results))


@api.get("/v1/tiers", tags=["model"], responses=_problems(503))
async def list_tiers(service: RouteServiceDep) -> schemas.ListTiersResponse:
    """The served tier ladder, cheapest first."""
    return convert.tiers_model(service.tiers)


@api.get("/v1/model", tags=["model"], responses=_problems(503))
async def get_model(service: RouteServiceDep) -> schemas.ModelInfo:
    """The served bundle's identity."""
    return convert.model_info_model(service.manifest, service.tiers)


@api.post(
    "/v1/admin/reload",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=_problems(401, 403, 404, 409, 422),
)
async def reload_model(
    body: schemas.ReloadRequest, service: RouteServiceDep
) -> schemas.ReloadResponse:
    """Load the bundle directory at ``path`` and serve it; a refused bundle (409) changes nothing.

    404 when no admin key is configured (the endpoint is off), 401 without the right bearer key,
    403 when ``path`` is not under a configured bundle root (``TIERWISE_SERVICE__BUNDLE_ROOTS``).
    """
    previous = await service.admin_reload(body.path)
    model = convert.model_info_model(service.manifest, service.tiers)
    return schemas.ReloadResponse(previous_model_version=previous, model=model)


@api.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@api.get("/readyz", tags=["health"], responses=_problems(503))
async def readyz(service: RouteServiceDep) -> dict[str, str]:
    """Readiness: a bundle is loaded and the service is not shutting down."""
    if not service.ready:
        raise ModelNotReady("not ready: no bundle loaded, or shutting down")
    return {"status": "ready", "model_version": service.manifest.model_version}


@api.get("/metrics", tags=["health"], response_class=Response)
async def metrics(service: RouteServiceDep) -> Response:
    """Prometheus metrics of this service."""
    return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def bind_http_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn (``port`` 0 picks a free one; read it back after).

    TCP_NODELAY is set on the listener so accepted connections inherit it: uvicorn writes a
    response's headers and body separately, and on a pre-bound socket (unlike one uvicorn binds)
    Nagle's algorithm then holds the body until the client's delayed ACK, 40 ms per keep-alive
    request.
    """
    sock = socket.create_server((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def create_app(settings: ServiceSettings, route_service: RouteService) -> FastAPI:
    """The HTTP application over ``route_service``."""
    app = FastAPI(
        title="tierwise router",
        version="1",
        summary="Picks the cheapest model tier that will answer a prompt well.",
    )
    app.state.route_service = route_service
    key = settings.admin_key
    app.state.admin_key = key.get_secret_value() if key is not None else None
    app.include_router(api)
    _serve_route_directly(app)
    app.add_exception_handler(RouterError, _router_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(ProblemBodyLimit, max_bytes=settings.max_body_bytes)
    overloaded = problem_body(status=503, title="Overloaded", detail="too many requests in "
                              "flight; retry after the Retry-After seconds", instance="",
                              code="overloaded")
    app.add_middleware(InFlightLimit, limit=settings.server.max_in_flight,
                       retry_after_s=settings.server.retry_after_s,
                       body=json.dumps(overloaded).encode())
    return app


def _serve_route_directly(app: FastAPI) -> None:
    """Put ``FastRoute`` in front of ``POST /v1/route``; the FastAPI route stays for OpenAPI."""
    slow = next(r for r in api.routes if isinstance(r, Route) and r.endpoint is route)
    app.router.routes.insert(0, Route("/v1/route", FastRoute(slow.app), methods=["POST"]))


class FastRoute:
    """``POST /v1/route`` without FastAPI's per-request dependency solving and body handling.

    That machinery costs more than a hand-feature decision. A body sent as ``application/json``
    that parses into ``RouteRequest`` is served here by the same code as the FastAPI route
    (``route`` above); any other body goes to that route, so its error responses stay FastAPI's
    word for word. Errors of the core propagate to the app's exception handlers either way.
    """

    def __init__(self, fallback: ASGIApp) -> None:
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body: nobody to answer
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        request = _route_request(scope, body)
        if request is None:
            await self.fallback(scope, replay_body(body, receive), send)
            return
        service: RouteService = scope["app"].state.route_service
        result = await service.route(convert.route_input_from_model(request), transport="http")
        await _json(convert.route_response_model(result))(scope, receive, send)


def _route_request(scope: Scope, body: bytes) -> schemas.RouteRequest | None:
    """The request as FastAPI would validate it, or None when FastAPI should answer it."""
    types = [v for k, v in scope["headers"] if k.lower() == b"content-type"]
    if types != [b"application/json"]:
        return None
    try:
        doc = json.loads(body)  # what starlette's Request.json() does
        return schemas.RouteRequest.model_validate(doc) if isinstance(doc, dict) else None
    # JSONDecodeError, UnicodeDecodeError and the integer digit limit are ValueErrors;
    # RecursionError is JSON nested deeper than the interpreter's recursion limit
    except (ValueError, RecursionError, ValidationError):
        return None


def _problem(doc: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        doc, status_code=doc["status"], media_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


def _count_rejected(app: Any, code: str) -> None:
    # requests refused before they reach the core (which counts its own errors)
    service: RouteService | None = getattr(app.state, "route_service", None)
    if service is not None:
        service.metrics.errors.labels("http", code).inc()


async def _router_error(request: Request, exc: Exception) -> Response:
    if spec_for(exc).http_status >= 500 and not isinstance(exc, ModelNotReady):
        logger.warning("%s failed: %s", request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return _problem(problem_for(exc, request.url.path), headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return _malformed_json(request, "the request body is not valid JSON")
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    doc = problem_body(
        status=422, title="Invalid request", detail=detail, instance=request.url.path,
        code="validation_error", errors=errors,
    )
    _count_rejected(request.app, doc["code"])
    return _problem(doc)


def _malformed_json(request: Request, detail: str) -> Response:
    doc = problem_body(
        status=400, title="Malformed JSON", detail=detail, instance=request.url.path,
        code="malformed_json",
    )
    _count_rejected(request.app, doc["code"])
    return _problem(doc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = HTTPStatus(exc.status_code)
    detail, code = str(exc.detail), status.name.lower()
    # FastAPI answers 400 "error parsing the body" from whatever its JSON parsing raised, the
    # cause, other than JSONDecodeError (a RequestValidationError, above)
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        detail = f"the request body is not valid UTF-8 ({cause.reason})"
        code = "invalid_utf8"
        _count_rejected(request.app, code)
    elif isinstance(cause, RecursionError):
        return _malformed_json(request, "the request body's JSON is nested too deeply")
    elif isinstance(cause, ValueError):  # e.g. an integer over Python's digit limit
        return _malformed_json(request, "the request body is not valid JSON")
    doc = problem_body(
        status=status.value, title=status.phrase, detail=detail, instance=request.url.path,
        code=code,
    )
    return _problem(doc, dict(exc.headers) if exc.headers else None)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback after this handler answers
    return _problem(problem_for(exc, request.url.path))


class ProblemBodyLimit(BodyLimit):
    """The router's body limit: 413 as problem+json, counted with the other rejections."""

    async def refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        exc = PromptTooLarge(f"request body has {size}+ bytes, limit {self.max_bytes}")
        _count_rejected(scope["app"], exc.code)
        await _problem(problem_for(exc, scope.get("path", "")))(scope, receive, send)
