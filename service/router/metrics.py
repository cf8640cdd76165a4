"""Prometheus metrics of one ``RouteService``, on a registry of its own (never the global one)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
        self.errors = Counter(
            "tierwise_errors", "Route requests that failed, by error code.", ["transport", "code"],
            registry=r,
        )
        self._hot = _HotMetrics()
        r.register(self._hot)
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

    def observe_decision(self, transport: str, tier: str, seconds: float) -> None:
        """Count one decision and its latency (``tierwise_decisions``, ``..._latency_seconds``)."""
        hot = self._hot
        key = (transport, tier)
        count = hot.decisions.get(key)
        if count is None:
            hot.decisions_created[key] = time.time()
            count = 0
        hot.decisions[key] = count + 1
        latency = hot.latency.get(transport)
        if latency is None:
            latency = hot.latency[transport] = _Buckets(LATENCY_BUCKETS)
        latency.observe(seconds)

    def observe_batch(self, size: int) -> None:
        """Record the size of one scoring batch (``tierwise_batch_size``)."""
        self._hot.batch_size.observe(size)

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


class _Buckets:
    """One histogram's observations: per-bucket counts (the last is +Inf), sum, creation time."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # the first bucket whose bound is >= value, as prometheus_client's Histogram counts it
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add_to(self, family: HistogramMetricFamily, labels: dict[str, str]) -> None:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # untyped upstream
            buckets.append((le, float(cumulative)))
        family.add_metric(list(labels.values()), buckets, self.sum)
        family.add_sample(family.name + "_created", labels, self.created)


class _HotMetrics(Collector):
    """The metrics every decision updates, as plain ints and floats rendered at scrape time.

    prometheus_client's counters and histograms take a lock per update, ~1.8 us per decision
    and ~1 us per batch, a few percent of a hand-feature decision. These are updated without
    locks, so from one thread at a time: decisions on the event loop, batch sizes on the event
    loop or the batcher's scoring thread, which the batcher never runs at the same time. The
    exposition is the one prometheus_client's ``Counter``/``Histogram`` gave them.
    """

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str], int] = {}
        self.decisions_created: dict[tuple[str, str], float] = {}
        self.latency: dict[str, _Buckets] = {}
        self.batch_size = _Buckets(BATCH_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "tierwise_decisions", "Routing decisions made.", labels=["transport", "tier"]
        )
        for key, count in list(self.decisions.items()):
            decisions.add_metric(list(key), float(count), created=self.decisions_created[key])
        latency = HistogramMetricFamily(
            "tierwise_decision_latency_seconds",
            "Time in the core per request (queue + scoring).", labels=["transport"],
        )
        for transport, buckets in list(self.latency.items()):
            buckets.add_to(latency, {"transport": transport})
        batch = HistogramMetricFamily("tierwise_batch_size", "Prompts per scoring batch.")
        self.batch_size.add_to(batch, {})
        yield from (decisions, latency, batch)
