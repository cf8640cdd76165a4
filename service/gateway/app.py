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
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.sdk.trace.export import SpanExporter
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from router_model.encoder import load_tokenizer
from router_model.errors import ModelNotReady, NotFound, PromptTooLarge, RouterError
from router_model.records import FeedbackRecord
from router_model.settings import DEFAULT_BUNDLE, ServerLimits, ServiceSettings
from service.gateway.batch.jobs import JobStore, open_job_store
from service.gateway.batch.runner import BatchMetrics, BatchRunner, batch_apis
from service.gateway.batch.window import FALLBACK_HEADER, BatchWindow, non_urgent
from service.gateway.completions import Completions
from service.gateway.config import GatewayConfig
from service.gateway.dashboard import LiveCollector, dashboard_router
from service.gateway.decisions.local import LocalDecisions
from service.gateway.decisions.remote import RemoteDecisions
from service.gateway.decisions.source import DecisionSource
from service.gateway.errors import envelope, envelope_for
from service.gateway.levers.ab import Arm, ArmAssigner
from service.gateway.levers.budget import BudgetKnob
from service.gateway.levers.cache.response import ResponseCache
from service.gateway.levers.cache.store import CacheSettings
from service.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from service.gateway.quotas import RateLimited, open_quotas
from service.gateway.requests import AUTO_MODEL, FeedbackIn, invalid, parse_json
from service.gateway.shadow import ShadowLabeler
from service.gateway.tenants import bearer_key, tenant_of
from service.gateway.tracing import open_tracing
from service.gateway.upstream.pool import UpstreamPool, build_upstreams
from service.shared.body_limit import BodyLimit
from service.shared.errors import Unauthorized
from service.shared.server_limits import InFlightLimit
from service.store.backends import open_store
from service.store.traffic import SavingsReport, TrafficStore

logger = logging.getLogger(__name__)

#: Connections kept per upstream host: the gateway forwards many concurrent calls.
MAX_CONNECTIONS = 512


@dataclass(frozen=True)
class GatewayOptions:
    """What the gateway takes besides its config file: keys (already resolved) and limits."""

    client_keys: tuple[str, ...] = ()
    require_auth: bool = True
    admin_key: str | None = None
    #: ``api_key_env`` name -> key, resolved from the environment by ``router_model.settings``.
    upstream_keys: Mapping[str, str | None] = field(default_factory=dict)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    #: Connection and in-flight limits of the gateway's server (``service.shared.server_limits``).
    server: ServerLimits = field(default_factory=ServerLimits)
    #: Where spans go instead of ``tracing.endpoint`` (tests: an in-memory exporter); setting
    #: it turns tracing on (``service.gateway.tracing``).
    span_exporter: SpanExporter | None = None


def decision_source(config: GatewayConfig, options: GatewayOptions) -> DecisionSource:
    """The in-process router (``router.bundle``) or the gRPC client (``router.address``)."""
    if config.router.address is not None:
        return RemoteDecisions(config.router.address, config.router.timeout_s)
    bundle = config.router.bundle or DEFAULT_BUNDLE
    return LocalDecisions(bundle, options.service, config.router.encoder_threads)


def arm_assigner(config: GatewayConfig) -> ArmAssigner:
    """The configured A/B split (one router arm when there is none)."""
    if config.ab is None:
        return ArmAssigner.single_router()
    arms = [Arm(a.name, a.tier, a.weight) for a in config.ab.arms]
    return ArmAssigner(arms, config.ab.salt)


async def response_cache(
    config: GatewayConfig, decisions: DecisionSource, metrics: GatewayMetrics,
    stack: AsyncExitStack,
) -> ResponseCache | None:
    """The response cache when enabled, started and closed with ``stack``; semantic only with
    the in-process router's encoder; entries in ``cache.url`` (PostgreSQL) or this process."""
    if not config.cache.enabled:
        return None
    settings = CacheSettings(**config.cache.model_dump(exclude={"enabled"}))
    found = ResponseCache(settings, decisions.encoder(), on_error=metrics.cache_error,
                          on_event=metrics.cache_event)
    await found.start()
    stack.push_async_callback(found.aclose)
    logger.info("response cache on (%s): exact%s%s", "shared" if settings.url else "in process",
                ", canonical" if settings.canonical else "",
                ", semantic" if found.semantic else "")
    return found


async def budget_knob(config: GatewayConfig, store: TrafficStore) -> BudgetKnob | None:
    """The budget knob when ``budget.top_share`` is set, its window refilled from the store's
    newest decisions."""
    cfg = config.budget
    if cfg.top_share is None:
        return None
    budget = BudgetKnob(cfg.top_share, cfg.window, cfg.min_samples,
                        [t.name for t in config.tiers])
    seeded = budget.seed(await store.recent_decisions(cfg.window))
    logger.info("budget: at most %.0f%% of routed calls to the top tier, %d of %d decisions from "
                "the traffic store", 100 * cfg.top_share, seeded, cfg.window)
    return budget


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
                                      shadow=_shadow(config, pool, store, app.state.metrics,
                                                     tokenizer, stack), tracing=tracing)
            if budget is not None:
                app.state.metrics.watch_budget(completions.planner.budget_knob,
                                               budget.__len__)
            stack.push_async_callback(completions.aclose)
            app.state.metrics.registry.register(LiveCollector(completions))
            jobs = await _batch_runner(app, stack, store, http, tokenizer)
            app.state.batch_window = BatchWindow(
                config, jobs, completions.planner, completions.decisions, tokenizer,
                app.state.batch_metrics)
            app.state.completions = completions
            logger.info("gateway ready: %d tiers, traffic in %s", len(config.tiers),
                        config.traffic.url.split("@")[-1])
            yield
            app.state.completions = app.state.batch_window = None

    return lifespan


def _shadow(config: GatewayConfig, pool: UpstreamPool, store: TrafficStore,
            metrics: GatewayMetrics, tokenizer: Any, stack: AsyncExitStack) -> ShadowLabeler | None:
    """The shadow labeler when ``shadow.rate`` > 0, started and stopped with ``stack``."""
    if config.shadow.rate <= 0:
        return None
    labeler = ShadowLabeler(config, pool, store, metrics, tokenizer)
    labeler.start()
    stack.push_async_callback(labeler.aclose)
    logger.info("shadow labels on: %.1f%% of routed requests, judge %s",
                100 * config.shadow.rate, config.shadow.judge)
    return labeler


async def _batch_runner(
    app: FastAPI, stack: AsyncExitStack, store: TrafficStore, http: httpx.AsyncClient,
    tokenizer: Any,
) -> JobStore | None:
    """When the batch window is on: open its job store and start this replica's runner."""
    config: GatewayConfig = app.state.config
    options: GatewayOptions = app.state.options
    if not config.batch.enabled:
        return None
    jobs = open_job_store(config.traffic.url)
    await jobs.start()
    stack.push_async_callback(jobs.aclose)
    runner = BatchRunner(config, jobs, store, batch_apis(config, options.upstream_keys, http),
                         tokenizer, app.state.batch_metrics)
    runner.start()
    stack.push_async_callback(runner.aclose)
    return jobs


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
