"""The gateway's parts, built from its config and options: the decision source, the A/B arms,
the response cache, the budget knob, the shadow labeler and the batch runner (``app`` wires them
into the lifespan)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.sdk.trace.export import SpanExporter

from router_model.settings import DEFAULT_BUNDLE, ServerLimits, ServiceSettings
from service.gateway.batch.jobs import JobStore, open_job_store
from service.gateway.batch.runner import BatchMetrics, BatchRunner, batch_apis
from service.gateway.config import GatewayConfig
from service.gateway.decisions.local import LocalDecisions
from service.gateway.decisions.remote import RemoteDecisions
from service.gateway.decisions.source import DecisionSource
from service.gateway.levers.ab import Arm, ArmAssigner
from service.gateway.levers.budget import BudgetKnob
from service.gateway.levers.cache.response import ResponseCache
from service.gateway.levers.cache.store import CacheSettings
from service.gateway.metrics import GatewayMetrics
from service.gateway.shadow import ShadowLabeler
from service.gateway.upstream.pool import UpstreamPool
from service.store.traffic import TrafficStore

logger = logging.getLogger(__name__)


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


def shadow_labeler(config: GatewayConfig, pool: UpstreamPool, store: TrafficStore,
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


async def batch_runner(
    config: GatewayConfig, options: GatewayOptions, stack: AsyncExitStack, store: TrafficStore,
    http: httpx.AsyncClient, tokenizer: Any, metrics: BatchMetrics,
) -> JobStore | None:
    """When the batch window is on: open its job store and start this replica's runner."""
    if not config.batch.enabled:
        return None
    jobs = open_job_store(config.traffic.url)
    await jobs.start()
    stack.push_async_callback(jobs.aclose)
    runner = BatchRunner(config, jobs, store, batch_apis(config, options.upstream_keys, http),
                         tokenizer, metrics)
    runner.start()
    stack.push_async_callback(runner.aclose)
    return jobs
