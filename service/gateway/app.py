"""The OpenAI-compatible gateway app: ``create_gateway_app(config, options)`` and its thin routes.

Routes: ``POST /v1/chat/completions`` and ``GET /v1/models`` (client key), ``POST /v1/feedback``
and ``GET /v1/tierwise/jobs/{id}`` (client key), ``GET /v1/admin/savings`` (admin key),
``GET /metrics``, ``/healthz``, ``/readyz``.
Everything a request needs (router, upstream client, traffic store) starts in the lifespan hook;
errors leave as the OpenAI envelope.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from router_model.encoder import load_tokenizer
from router_model.errors import ModelNotReady, NotFound, PromptTooLarge, RouterError
from router_model.records import FeedbackRecord
from service.gateway.assembly import (
    GatewayOptions,
    arm_assigner,
    batch_runner,
    budget_knob,
    decision_source,
    response_cache,
    shadow_labeler,
)
from service.gateway.batch.runner import BatchMetrics
from service.gateway.batch.window import FALLBACK_HEADER, BatchWindow, non_urgent
from service.gateway.completions import Completions
from service.gateway.config import GatewayConfig
from service.gateway.dashboard import LiveCollector, dashboard_router
from service.gateway.errors import envelope, envelope_for
from service.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from service.gateway.quotas import RateLimited, open_quotas
from service.gateway.requests import AUTO_MODEL, FeedbackIn, invalid, parse_json
from service.gateway.tenants import bearer_key, tenant_of
from service.gateway.tracing import open_tracing
from service.gateway.upstream.pool import UpstreamPool, build_upstreams
from service.shared.body_limit import BodyLimit
from service.shared.errors import Unauthorized
from service.shared.server_limits import InFlightLimit
from service.store.backends import open_store
from service.store.traffic import SavingsReport

logger = logging.getLogger(__name__)

#: Connections kept per upstream host: the gateway forwards many concurrent calls.
MAX_CONNECTIONS = 512


def get_completions(request: Request) -> Completions:
    """The started ``Completions`` handler (set by the lifespan hook)."""
    completions: Completions | None = getattr(request.app.state, "completions", None)
    if completions is None:
        raise ModelNotReady("the gateway is starting")
    return completions


CompletionsDep = Annotated[Completions, Depends(get_completions)]


def get_batch_window(request: Request) -> BatchWindow:
    """The started ``BatchWindow`` (set by the lifespan hook)."""
    window: BatchWindow | None = getattr(request.app.state, "batch_window", None)
    if window is None:
        raise ModelNotReady("the gateway is starting")
    return window


BatchWindowDep = Annotated[BatchWindow, Depends(get_batch_window)]


def _bearer(request: Request) -> str:
    # the same parsing as the tenant's (``tenant_of``): the key checked is the key scoped by
    return bearer_key(request.headers.get("authorization", ""))


def require_client(request: Request) -> None:
    """Client routes need ``Authorization: Bearer <key>`` with a key from TIERWISE_API_KEYS.

    Raises:
        Unauthorized: when the key is missing or unknown.
    """
    options: GatewayOptions = request.app.state.options
    if not options.require_auth:
        return
    given = _bearer(request).encode()
    found = False
    for key in options.client_keys:  # every key compared: the time does not tell which matched
        found |= hmac.compare_digest(given, key.encode())
    if not given or not found:
        raise Unauthorized("invalid or missing API key: send 'Authorization: Bearer <key>'")


def require_admin(request: Request) -> None:
    """Admin routes need the admin key; without one configured they do not exist.

    Raises:
        NotFound: when no admin key is configured.
        Unauthorized: when the bearer key is not the admin key.
    """
    key = request.app.state.options.admin_key
    if key is None:
        raise NotFound("admin endpoints are disabled: no admin key is configured")
    if not hmac.compare_digest(_bearer(request).encode(), key.encode()):
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin key>'")


api = APIRouter()
client = [Depends(require_client)]


@api.post("/v1/chat/completions", dependencies=client, response_model=None)
async def chat_completions(
    request: Request, completions: CompletionsDep, window: BatchWindowDep
) -> Response:
    """OpenAI chat completions; ``model: "tierwise-auto"`` picks the cheapest adequate tier.

    Non-urgent requests are queued for the tier's batch endpoint when it has one (202, job id).
    """
    chat = await completions.read(await request.body(), request.headers)
    fallback, plan = None, None
    if non_urgent(chat.body, request.headers):
        deferral = await window.defer(chat, request.headers)
        if deferral.response is not None:
            return deferral.response
        fallback, plan = deferral.fallback, deferral.plan
    response = await completions.handle(chat, request.headers, plan)
    if fallback is not None:
        response.headers[FALLBACK_HEADER] = fallback
    return response


@api.get("/v1/tierwise/jobs/{job_id}", dependencies=client)
async def batch_job(
    job_id: Annotated[str, Path(max_length=64)], request: Request, window: BatchWindowDep
) -> dict[str, Any]:
    """A non-urgent request's job (the caller's own only): its status, then its answer."""
    return await window.job(job_id, request.headers)


@api.get("/v1/models", dependencies=client)
async def list_models(request: Request) -> dict[str, Any]:
    """``tierwise-auto`` and every configured tier's model, in OpenAI's list format."""
    config: GatewayConfig = request.app.state.config
    data = [{"id": AUTO_MODEL, "object": "model", "created": 0, "owned_by": "tierwise"}]
    data += [
        {"id": t.model, "object": "model", "created": 0, "owned_by": "tierwise",
         "tierwise_tier": t.name}
        for t in config.tiers
    ]
    return {"object": "list", "data": data}


@api.post("/v1/feedback", dependencies=client)
async def feedback(request: Request, completions: CompletionsDep) -> dict[str, Any]:
    """Store a label (``score`` in [0, 1] or ``thumbs``) for a decision made with the caller's
    key; 404 for unknown ids and other keys' decisions alike (as for batch jobs). A label below
    0.5 evicts the cache entry that answered (or was stored by) the decision."""
    body, _ = parse_json(await request.body(), FeedbackIn)
    try:
        record = FeedbackRecord.model_validate(body.model_dump())
    except ValidationError as exc:  # one label, not both or neither: the record's own rule
        raise invalid(exc) from None
    await completions.store.add_feedback(record, tenant_of(request.headers))
    if completions.cache is not None and record.value < 0.5:  # a bad cached answer: evict it
        await completions.cache.forget(record.decision_id)
    return {"object": "tierwise.feedback", "decision_id": record.decision_id, "value": record.value}


@api.get("/v1/admin/savings", dependencies=[Depends(require_admin)])
async def savings(completions: CompletionsDep) -> SavingsReport:
    """Cost against always using the top tier, over all recorded traffic, by arm and tier."""
    return await completions.store.savings()


@api.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of the gateway."""
    registry: GatewayMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)


@api.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@api.get("/readyz")
async def readyz(completions: CompletionsDep) -> dict[str, str]:
    """Readiness: the router, the traffic store and the upstream client are started."""
    return {"status": "ready"}


def _lifespan(config: GatewayConfig, options: GatewayOptions) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            decisions = decision_source(config, options)
            store = open_store(config.traffic.url)
            try:
                await decisions.start(config.tier_ladder())
                stack.push_async_callback(decisions.aclose)
                await store.start()
                stack.push_async_callback(store.aclose)
            except RouterError as exc:
                logger.error("gateway refused to start: %s", exc)
                raise
            tokenizer = await asyncio.to_thread(load_tokenizer)
            http = await stack.enter_async_context(httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=config.failover.connect_timeout_s),
                limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                    max_keepalive_connections=MAX_CONNECTIONS),
            ))
            pool = UpstreamPool(build_upstreams(config, options.upstream_keys), config.failover,
                                http)
            pool.on_failure = app.state.metrics.upstream_failure
            tracing = open_tracing(config.tracing, options.span_exporter)
            stack.push_async_callback(tracing.aclose)  # after the requests' records (below)
            pool.tracing = tracing
            cache = await response_cache(config, decisions, app.state.metrics, stack)
            budget = await budget_knob(config, store)
            completions = Completions(config, decisions, arm_assigner(config), store,
                                      app.state.metrics, pool, tokenizer, cache, budget,
                                      quotas=await open_quotas(config.limits, config.traffic.url,
                                                               stack),
                                      shadow=shadow_labeler(config, pool, store, app.state.metrics,
                                                            tokenizer, stack), tracing=tracing)
            if budget is not None:
                app.state.metrics.watch_budget(completions.planner.budget_knob,
                                               budget.__len__)
            stack.push_async_callback(completions.aclose)
            app.state.metrics.registry.register(LiveCollector(completions))
            jobs = await batch_runner(config, options, stack, store, http, tokenizer,
                                     app.state.batch_metrics)
            app.state.batch_window = BatchWindow(
                config, jobs, completions.planner, completions.decisions, tokenizer,
                app.state.batch_metrics)
            app.state.completions = completions
            logger.info("gateway ready: %d tiers, traffic in %s", len(config.tiers),
                        config.traffic.url.split("@")[-1])
            yield
            app.state.completions = app.state.batch_window = None

    return lifespan


def create_gateway_app(config: GatewayConfig, options: GatewayOptions) -> FastAPI:
    """The gateway application; its lifespan hook starts the router, store and upstream client.

    Start-up (the lifespan) raises ``ArtifactMismatch`` when the router's tiers do not match the
    configured ones, and ``InvalidData`` when the traffic store cannot be opened.
    """
    app = FastAPI(title="tierwise gateway", version="1", lifespan=_lifespan(config, options),
                  summary="OpenAI-compatible: each request goes to the cheapest adequate tier.")
    app.state.config = config
    app.state.options = options
    app.state.metrics = GatewayMetrics()
    app.state.batch_metrics = BatchMetrics(app.state.metrics.registry)
    app.state.completions = app.state.batch_window = None
    app.include_router(api)
    app.include_router(dashboard_router(require_admin))  # /dashboard, admin key
    app.add_exception_handler(RouterError, _error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _path_error)
    app.add_exception_handler(Exception, _error)
    app.add_middleware(GatewayBodyLimit, max_bytes=config.limits.max_body_bytes)
    overloaded = envelope("the gateway has too many requests in flight; retry after the "
                          "Retry-After seconds", 503, code="overloaded")
    app.add_middleware(InFlightLimit, limit=options.server.max_in_flight,
                       retry_after_s=options.server.retry_after_s,
                       body=json.dumps(overloaded).encode())
    return app


def _envelope_response(status: int, doc: dict[str, Any], app: Any) -> Response:
    metrics: GatewayMetrics = app.state.metrics
    metrics.rejected.labels(str(doc["error"]["code"])).inc()
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(doc, status_code=status, headers=headers)


async def _error(request: Request, exc: Exception) -> Response:
    status, doc = envelope_for(exc)
    if status >= 500:
        logger.error("%s failed: %s", request.url.path, doc["error"]["message"],
                     exc_info=not isinstance(exc, RouterError))
    response = _envelope_response(status, doc, request.app)
    if isinstance(exc, RateLimited):
        response.headers["retry-after"] = str(exc.retry_after_s)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "http_error"
    return _envelope_response(exc.status_code, envelope(str(exc.detail), exc.status_code,
                                                         code=code), request.app)


async def _path_error(request: Request, exc: Exception) -> Response:
    """A path parameter out of shape (the only thing FastAPI validates here) names nothing: 404."""
    return _envelope_response(404, envelope(f"no such resource: {request.url.path[:120]}", 404,
                                            code="not_found"), request.app)


class GatewayBodyLimit(BodyLimit):
    """The body limit answering with the OpenAI envelope (413)."""

    async def refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        exc = PromptTooLarge(f"request body has {size}+ bytes, limit {self.max_bytes}")
        status, doc = envelope_for(exc)
        await _envelope_response(status, doc, scope["app"])(scope, receive, send)
