"""Judge labels in the traffic store, SQLite and PostgreSQL: stored apart from feedback, replaced
per tier, in the savings report's shadow line, read by retraining, and a store written before the
table existed gains it when it starts. PostgreSQL skips when TIERWISE_TEST_POSTGRES_URL is unset.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from gateway_support import postgres_url_fixture  # noqa: F401  (fixture)

from router_model.records import JudgeLabel, TrafficRecord
from router_model.traffic_schema import COLUMNS
from service.store.backends import open_store
from training.traffic import read_decisions


def record(i: int) -> TrafficRecord:
    return TrafficRecord(decision_id=f"d{i}", arm="router", propensity=1.0, source="router",
                         requested_model="tierwise-auto", decided_tier="weak", tier="weak",
                         model="w", status=200, cost_usd=0.001, top_tier_cost_usd=0.01,
                         prompt_sha256=f"p{i}")


def grade(tier: str, rating: int, cost: float) -> JudgeLabel:
    return JudgeLabel(decision_id="d0", tier=tier, model=tier[0], score=(rating - 1) / 9,
                      rating=rating, judge="s", cost_usd=cost, judge_cost_usd=0.0005)


async def exercise(url: str) -> None:
    store = open_store(url)
    await store.start()
    try:
        await store.record(record(0))
        await store.add_judge_labels([grade("weak", 3, 0.0), grade("strong", 9, 0.01)])
        await store.add_judge_labels([grade("weak", 4, 0.0)])  # graded again: replaced
        found = await store.judge_labels_for("d0")
        assert [(x.tier, x.rating) for x in found] == [("strong", 9), ("weak", 4)]
        assert await store.feedback_for("d0") == []
        report = await store.savings()
        assert (report.shadow.decisions, report.shadow.labels) == (1, 2)
        assert report.shadow.cost_usd == pytest.approx(0.011)
        assert report.net_savings_usd == pytest.approx(0.009 - 0.011)
        with pytest.raises(Exception):  # noqa: B017 (the backend's own error)
            await store.add_judge_labels([grade("weak", 5, 0.0).model_copy(
                update={"decision_id": "unknown"})])
    finally:
        await store.aclose()
    [decision] = read_decisions(url)
    assert decision.judge == {"weak": 3 / 9, "strong": 8 / 9} and decision.score is None


def test_sqlite(tmp_path: Path) -> None:
    asyncio.run(exercise(f"sqlite:///{tmp_path / 't.db'}"))


def test_postgres(postgres_url: str) -> None:
    asyncio.run(exercise(postgres_url))


def test_an_older_sqlite_store_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # a store from before judge labels
        conn.execute(f"CREATE TABLE traffic ({', '.join(f'{c.name} {c.sqlite}' for c in COLUMNS)})")
        conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, decision_id "
                     "TEXT, created_at TEXT, score REAL, thumbs TEXT, comment TEXT, value REAL)")
    assert read_decisions(f"sqlite:///{path}") == []
    asyncio.run(exercise(f"sqlite:///{path}"))
