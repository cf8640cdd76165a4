"""Prometheus metrics of one ``RouteService``, on a registry of its own (never the global one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Seconds; decisions take ~0.1 ms (hand features) to ~50 ms (encoder under load).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """The counters, histograms and gauges the core updates; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "tierwise_decisions", "Routing decisions made.", ["transport", "tier"], registry=r
        )
        self.errors = Counter(
            "tierwise_errors", "Route requests that failed, by error code.", ["transport", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "tierwise_decision_latency_seconds", "Time in the core per request (queue + scoring).",
            ["transport"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "tierwise_batch_size", "Prompts per scoring batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "tierwise_queue_depth", "Prompts waiting for a scoring batch.", registry=r
        )
        self.model_info = Gauge(
            "tierwise_model_info", "The served bundle (value 1).",
            ["model_version", "feature_version"], registry=r,
        )
        self.reloads = Counter(
            "tierwise_reloads", "Bundle reloads, by outcome.", ["outcome"], registry=r
        )
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_decision(self, transport: str, tier: str, seconds: float) -> None:
        """Count one decision and its latency (label children cached: this is the hot path)."""
        children = self._children.get((transport, tier))
        if children is None:
            children = (self.decisions.labels(transport, tier), self.latency.labels(transport))
            self._children[(transport, tier)] = children
        children[0].inc()
        children[1].observe(seconds)

    def track_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from ``depth`` at scrape time."""
        self.queue_depth.set_function(lambda: float(depth()))

    def set_model(self, model_version: str, feature_version: int) -> None:
        """Mark ``model_version`` as the one served (and no other)."""
        self.model_info.clear()
        self.model_info.labels(model_version, str(feature_version)).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
