"""The dashboard's SQL aggregates on real SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gateway_support import postgres_url_fixture  # noqa: F401  (fixture)

from router_model.records import TrafficRecord
from service.store.aggregates import Aggregates
from service.store.backends import open_store

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


def record(hours_ago: float, tier: str, **changes: Any) -> TrafficRecord:
    doc: dict[str, Any] = {
        "decision_id": uuid.uuid4().hex, "arm": "router", "propensity": 1.0, "source": "router",
        "requested_model": "tierwise-auto", "decided_tier": tier, "tier": tier, "model": tier,
        "status": 200, "input_tokens": 10, "output_tokens": 5,
        "cost_usd": 1e-4 if tier == "weak" else 3e-4, "top_tier_cost_usd": 3e-4,
        "created_at": NOW - timedelta(hours=hours_ago), "router_latency_ms": 1.0,
        "model_version": "tiny:v1",
    }
    doc.update(changes)
    return TrafficRecord(**doc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def run(url: str, records: list[TrafficRecord], windows: list[str]) -> list[Aggregates]:
    async def go() -> list[Aggregates]:
        store = open_store(url)
        await store.start()
        try:
            for r in records:
                await store.record(r)
            return [await store.dashboard(w) for w in windows]
        finally:
            await store.aclose()

    return asyncio.run(go())


def test_empty_store_has_no_buckets(store_url: str) -> None:
    (found,) = run(store_url, [], ["7d"])
    assert found.series == [] and found.savings.total.requests == 0
    assert found.latency.samples == 0 and found.latency.p50_ms is None
    assert found.model_version is None


def test_buckets_savings_and_percentiles(store_url: str) -> None:
    records = [record(0, "weak", router_latency_ms=float(i)) for i in range(1, 101)]
    records += [record(2, "strong"), record(2, "weak", levers={"cache": 1e-4}),
                record(50, "weak", model_version="tiny:v0",
                       created_at=NOW - timedelta(hours=50)),
                record(0, "weak", status=502, router_latency_ms=1e6)]  # failed: not counted
    day, week, everything = run(store_url, records, ["24h", "7d", "all"])
    assert [b.requests for b in day.series] == [2, 100]
    assert day.series[0].tiers == {"strong": 1, "weak": 1}
    assert day.series[1].start == NOW.strftime("%Y-%m-%dT%H")
    assert day.savings.total.requests == 102
    assert day.savings.total.levers["cache"] == pytest.approx(1e-4)
    assert day.savings.total.cost_usd == pytest.approx(101 * 1e-4 + 3e-4)
    # nearest rank over 1..100 and two latencies of 1.0: 49 and 99 exactly; the histogram is
    # within its bucket (bounds a factor 1.5 apart)
    assert day.latency.samples == 102
    assert day.latency.p50_ms == pytest.approx(49.0, rel=0.5)
    assert day.latency.p99_ms == pytest.approx(99.0, rel=0.5)
    assert len(week.series) == 3 and week.bucket == "hour"
    assert everything.bucket == "day" and everything.savings.total.requests == 103
    assert everything.model_version == "tiny:v1"
