"""The savings ledger's ``levers`` column: added to older stores on start, tolerated by readers."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from gateway_support import postgres_url_fixture  # noqa: F401  (fixture)

from router_model.records import TrafficRecord
from router_model.traffic_schema import ADDED, COLUMNS, encode_record
from service.store.backends import open_store
from training.ab_report import lever_ledger
from training.traffic import read_decisions

OLD_COLUMNS = [c for c in COLUMNS if c not in ADDED]


def sample(**changes: Any) -> TrafficRecord:
    doc: dict[str, Any] = {
        "decision_id": uuid.uuid4().hex, "arm": "router", "propensity": 1.0, "source": "router",
        "requested_model": "tierwise-auto", "decided_tier": "weak", "tier": "weak",
        "model": "m-weak", "status": 200, "input_tokens": 1000, "output_tokens": 500,
        "cost_usd": 0.0009, "top_tier_cost_usd": 0.025, "probabilities": {"weak": 0.8},
    }
    doc.update(changes)
    return TrafficRecord(**doc)


def _old_table(url: str, record: TrafficRecord) -> None:
    """A ``traffic`` table as stores wrote it before the ledger, holding ``record``."""
    values = encode_record(record)
    values["created_at"] = record.created_at.isoformat()
    row = tuple(values[c.name] for c in OLD_COLUMNS)
    names = ", ".join(c.name for c in OLD_COLUMNS)
    if url.startswith("sqlite:///"):
        cols = ", ".join(f"{c.name} {c.sqlite}" for c in OLD_COLUMNS)
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(f"CREATE TABLE traffic ({cols})")
            conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY, decision_id TEXT, "
                         "created_at TEXT, score REAL, thumbs TEXT, comment TEXT, value REAL)")
            conn.execute(f"INSERT INTO traffic ({names}) VALUES ({', '.join('?' * len(row))})",
                         row)
        return
    cols = ", ".join(f"{c.name} {c.postgres}" for c in OLD_COLUMNS)
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE traffic ({cols})")
        conn.execute("CREATE TABLE feedback (id BIGSERIAL PRIMARY KEY, decision_id TEXT, "
                     "created_at TIMESTAMPTZ, score DOUBLE PRECISION, thumbs TEXT, "
                     "comment TEXT, value DOUBLE PRECISION NOT NULL)")
        conn.execute(f"INSERT INTO traffic ({names}) VALUES ({', '.join(['%s'] * len(row))})",
                     (*row[:2], record.created_at, *row[3:]))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_levers_validation_and_routing_share() -> None:
    r = sample(levers={"trim": 0.002, "cascade": -0.0005})
    # 0.025 - 0.0009 = 0.0241 saved in all; the levers' 0.0015 of it is not routing's
    assert r.savings_usd == pytest.approx(0.0241)
    assert r.routing_savings_usd == pytest.approx(0.0226)
    assert sample().levers == {} and sample().routing_savings_usd == pytest.approx(0.0241)
    for bad in ({"routing": 1.0}, {"cache": float("nan")}, {"trim": float("inf")}):
        with pytest.raises(ValueError):
            sample(levers=bad)


def test_an_older_store_gains_the_column_and_keeps_its_rows(store_url: str) -> None:
    old = sample()
    _old_table(store_url, old)
    # retraining reads the old table before any gateway touched it: the lever column is absent
    [before] = read_decisions(store_url)
    assert before.record == old and before.record.levers == {}

    new = sample(levers={"trim": 0.002, "cascade": -0.0005})

    async def run() -> None:
        for _ in range(2):  # the second start finds the column already there
            store = open_store(store_url)
            await store.start()
            try:
                assert await store.get(old.decision_id) == old
                if await store.get(new.decision_id) is None:
                    await store.record(new)
                assert await store.get(new.decision_id) == new
                report = await store.savings()  # the lever sums run in each backend's SQL
                # saved 2 * (0.025 - 0.0009) = 0.0482, of which trim 0.002 and cascade -0.0005
                assert report.total.savings_usd == pytest.approx(0.0482)
                assert report.total.levers == pytest.approx(
                    {"routing": 0.0467, "ab_fixed_arm": 0.0, "fail_open": 0.0, "cache": 0.0,
                     "trim": 0.002, "batch": 0.0, "cascade": -0.0005})
                assert report.lever_share_pct["trim"] == pytest.approx(100 * 0.002 / 0.0482,
                                                                       abs=0.05)
            finally:
                await store.aclose()

    asyncio.run(run())
    after = {d.record.decision_id: d.record for d in read_decisions(store_url)}
    assert after == {old.decision_id: old, new.decision_id: new}
    assert after[new.decision_id].levers == {"cascade": -0.0005, "trim": 0.002}


def test_fixed_arm_and_fail_open_savings_are_not_routings(store_url: str) -> None:
    # each saves 0.025 - 0.0009 = 0.0241 by its tier choice; only the router's is routing's
    rows = [sample(), sample(arm="always_weak", source="fixed_arm", propensity=0.5),
            sample(source="fail_open", fail_open=True),
            sample(arm="always_weak", source="cache", cost_usd=0.0, levers={"cache": 0.0009})]
    assert [r.routing_savings_usd for r in rows] == pytest.approx([0.0241, 0.0, 0.0, 0.0])

    async def run() -> None:
        store = open_store(store_url)
        await store.start()
        try:
            for r in rows:
                await store.record(r)
            report = await store.savings()
        finally:
            await store.aclose()
        assert report.total.levers == pytest.approx(
            {"routing": 0.0241, "ab_fixed_arm": 2 * 0.0241, "fail_open": 0.0241, "cache": 0.0009,
             "trim": 0.0, "batch": 0.0, "cascade": 0.0})
        assert report.by_arm["always_weak"].levers["routing"] == 0.0
        assert sum(report.lever_share_pct.values()) == pytest.approx(100.0, abs=0.05)

    asyncio.run(run())
    ledger = lever_ledger(read_decisions(store_url))  # ab-report reads the same split
    assert {k: v["usd"] for k, v in ledger["levers"].items()} == pytest.approx(
        {"routing": 0.0241, "ab_fixed_arm": 2 * 0.0241, "fail_open": 0.0241, "cache": 0.0009,
         "trim": 0.0, "batch": 0.0, "cascade": 0.0})
