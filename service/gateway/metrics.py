"""Prometheus metrics of the gateway, on a registry of its own (never the global one)."""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router_model.records import LEDGER, TrafficRecord

#: Seconds of a whole gateway request, upstream included.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)

#: The media type of ``GatewayMetrics.render``'s text.
CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """Counters of requests, failovers, fail-opens, cost and savings; ``render()`` is /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tierwise_gateway_requests", "Chat completion requests answered or failed.",
            ["arm", "tier", "status"], registry=r,
        )
        self.rejected = Counter(
            "tierwise_gateway_rejected", "Requests refused before forwarding, by error code.",
            ["code"], registry=r,
        )
        self.failovers = Counter(
            "tierwise_gateway_failovers", "Retries on another tier after an upstream failure.",
            registry=r,
        )
        self.upstream_failures = Counter(
            "tierwise_gateway_upstream_failures", "Failed upstream attempts, by tier and reason.",
            ["tier", "reason"], registry=r,
        )
        self.fail_open = Counter(
            "tierwise_gateway_fail_open",
            "Requests sent to default_tier because the router could not decide.", registry=r,
        )
        self.cost = Counter(
            "tierwise_gateway_cost_usd", "USD spent upstream, by tier.", ["tier"], registry=r
        )
        self.top_tier_cost = Counter(
            "tierwise_gateway_top_tier_cost_usd",
            "USD the same requests would have cost on the top tier (a pass-through request: on "
            "the model it named, the no-lever baseline of the ledger).", registry=r,
        )
        self.savings = Counter(
            "tierwise_gateway_savings_usd",
            "USD saved against always using the top tier (can only grow: negative savings of a "
            "request that failed over upward are not subtracted).", registry=r,
        )
        self.lever_savings = Gauge(
            "tierwise_gateway_lever_savings_usd",
            "USD saved against always using the top tier, by ledger part (routing, ab_fixed_arm, "
            "fail_open, cache, trim, batch, cascade; TrafficRecord.ledger). A gauge: a cascade "
            "that escalated saved a negative amount.", ["lever"], registry=r,
        )
        self._lever_children = {
            name: self.lever_savings.labels(name) for name in LEDGER}
        self.traffic_errors = Counter(
            "tierwise_gateway_traffic_write_errors", "Traffic records that could not be committed.",
            registry=r,
        )
        self.cache = Counter(
            "tierwise_gateway_cache_lookups", "Response cache lookups, by result.",
            ["result"], registry=r,
        )
        self.cache_saved = Counter(
            "tierwise_gateway_cache_saved_usd",
            "USD not spent upstream: what each request answered from the cache would have cost.",
            registry=r,
        )
        self.cache_errors = Counter(
            "tierwise_gateway_cache_errors",
            "Response cache store failures, by operation (a failed lookup is answered as a miss).",
            ["op"], registry=r,
        )
        self.cache_rejections = Counter(
            "tierwise_gateway_cache_rejections",
            "Semantic cache candidates refused by the equivalence check (a miss), by the check "
            "that failed (options, code, quoted, math, numbers, entities, negation, wording).",
            ["reason"], registry=r,
        )
        self.cache_evictions = Counter(
            "tierwise_gateway_cache_evictions",
            "Response cache entries dropped: negative feedback on their answer (feedback), or "
            "unreadable when found (corrupt, never served).", ["reason"], registry=r,
        )
        self.trimmed_tokens = Counter(
            "tierwise_gateway_trimmed_tokens", "Input tokens removed by prompt trimming.",
            registry=r,
        )
        self.shadow_samples = Counter(
            "tierwise_gateway_shadow_samples",
            "Shadow label samples, by result (queued, labeled, dropped_full, over_budget, "
            "unparseable, judge_failed, tier_failed, no_other_answer, failed).", ["result"],
            registry=r,
        )
        self.shadow_cost = Counter(
            "tierwise_gateway_shadow_cost_usd",
            "USD spent on shadow calls and their judge (the ledger's shadow line).", registry=r,
        )
        self.latency = Histogram(
            "tierwise_gateway_latency_seconds", "Whole request time, upstream included.",
            ["routed"], buckets=LATENCY_BUCKETS, registry=r,
        )

    def observe(self, record: TrafficRecord) -> None:
        """Count one finished request."""
        self.requests.labels(record.arm, record.tier or "none", str(record.status)).inc()
        if record.failovers:
            self.failovers.inc(record.failovers)
        if record.fail_open:
            self.fail_open.inc()
        self.cost.labels(record.tier or "none").inc(record.cost_usd)
        self.top_tier_cost.inc(record.top_tier_cost_usd)
        self.savings.inc(max(record.savings_usd, 0.0))
        for part, saved in record.ledger.items():
            if saved:
                self._lever_children[part].inc(saved)
        routed = "false" if record.source == "passthrough" else "true"
        self.latency.labels(routed).observe(record.latency_ms / 1000.0)

    def shadow_spend(self, usd: float) -> None:
        """Count shadow spend: its own counter, and the ledger gauge's ``shadow`` line (a cost,
        so it goes down)."""
        self.shadow_cost.inc(usd)
        self.lever_savings.labels("shadow").dec(usd)

    def upstream_failure(self, tier: str, reason: str) -> None:
        """Count one failed upstream attempt."""
        self.upstream_failures.labels(tier, reason).inc()

    def cache_error(self, op: str) -> None:
        """Count one failed operation of the response cache's store."""
        self.cache_errors.labels(op).inc()

    def cache_event(self, kind: str, reason: str) -> None:
        """Count one refused semantic candidate ("rejected") or dropped entry ("evicted")."""
        counter = self.cache_rejections if kind == "rejected" else self.cache_evictions
        counter.labels(reason).inc()

    def watch_budget(self, knob: Callable[[], float | None], window: Callable[[], int]) -> None:
        """Export the budget's knob in force (NaN until its window is full enough) and its
        window's size."""
        gauge = Gauge("tierwise_gateway_budget_knob",
                      "The knob the budget gives requests that set none, capped at the default "
                      "knob (NaN: not enough decisions yet, the default applies).",
                      registry=self.registry)
        gauge.set_function(lambda: math.nan if (k := knob()) is None else k)
        size = Gauge("tierwise_gateway_budget_window",
                     "Router decisions in the budget's window.", registry=self.registry)
        size.set_function(lambda: float(window()))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
