"""The dashboard's SQL aggregates on real SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gateway_support import postgres_url_fixture  # noqa: F401  (fixture)

from router_model.records import FeedbackRecord, TrafficRecord
from service.store.aggregates import Aggregates
from service.store.backends import open_store
from training.ab_report import online_report
from training.traffic import read_decisions

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


def ab_records() -> tuple[list[TrafficRecord], list[FeedbackRecord]]:
    """A router arm (cheaper, a little worse) and an always_strong arm, each 60 labeled
    requests, plus rows no arm counts: pass-through, failed, and unlabeled requests."""
    records, labels = [], []
    for i in range(120):
        router = i % 2 == 0
        tier = "weak" if router and i % 4 == 0 else "strong"
        r = record(i / 60, tier, arm="router" if router else "always_strong",
                   source="router" if router else "fixed_arm",
                   cost_usd=1e-4 if tier == "weak" else 3e-4)
        records.append(r)
        labels.append(FeedbackRecord(decision_id=r.decision_id, score=(i % 5) / 4))
        if i % 7 == 0:  # a second label: the decision's quality is the mean of both
            labels.append(FeedbackRecord(decision_id=r.decision_id, thumbs="up"))
    records += [record(0, "strong", arm="passthrough", source="passthrough"),
                record(0, "weak", status=502), record(0, "weak")]
    labels += [FeedbackRecord(decision_id=records[-3].decision_id, score=0.0),
               FeedbackRecord(decision_id=records[-2].decision_id, score=0.0)]
    return records, labels


def test_ab_arms_are_the_ab_report_figures(store_url: str) -> None:
    records, labels = ab_records()

    async def go() -> Aggregates:
        store = open_store(store_url)
        await store.start()
        try:
            for r in records:
                await store.record(r)
            for f in labels:
                await store.add_feedback(f, "")
            return await store.dashboard("all")
        finally:
            await store.aclose()

    ab = asyncio.run(go()).ab
    report = online_report(read_decisions(store_url), seed=0, min_labeled=30)
    assert set(ab.arms) == set(report["arms"]) == {"router", "always_strong"}
    for name, arm in ab.arms.items():
        want = report["arms"][name]
        assert (arm.requests, arm.labeled) == (want["requests"], want["labeled"])
        assert arm.cost_per_request_usd == pytest.approx(want["cost_per_request_usd"])
        assert arm.quality == pytest.approx(want["quality"])
        assert arm.quality_ci == pytest.approx(want["quality_ci"])
    (cmp,) = ab.comparisons.values()
    want = report["comparisons"]["always_strong"]
    assert cmp.cost_diff_usd == pytest.approx(want["cost_diff"]["diff"])
    assert cmp.quality_diff == pytest.approx(want["quality_diff"])
    assert cmp.verdict == want["verdict"] == ab.verdict
    assert (ab.arms["router"].requests, ab.arms["router"].labeled) == (61, 60)
    assert ab.verdict.startswith("router arm saves 33.9% per request against 'always_strong'")


def test_ab_arms_with_too_few_labels_give_no_number(store_url: str) -> None:
    (found,) = run(store_url, [record(0, "weak"), record(0, "strong", arm="always_strong",
                                                         source="fixed_arm")], ["24h"])
    assert found.ab.arms["router"].quality is None
    assert found.ab.arms["router"].quality_note == "not enough data: 0 labels (need 30)"
    assert found.ab.comparisons["always_strong"].quality_diff is None
    assert found.ab.verdict.startswith("not enough data: 0 labeled requests on 'router'")


def test_one_arm_is_no_comparison(store_url: str) -> None:
    (alone,) = run(store_url, [record(0, "weak")], ["24h"])
    assert alone.ab.verdict == "not enough data: need the 'router' arm and one other, got " \
                               "['router']"
