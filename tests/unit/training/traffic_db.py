"""Builds small traffic stores with the shared schema (no service import) for training tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from router_model.features import FEATURE_VERSION
from router_model.records import JudgeLabel, TrafficRecord
from router_model.traffic_schema import (
    COLUMNS,
    JUDGE_NAMES,
    JUDGE_TABLE,
    NAMES,
    encode_record,
    judge_table_sql,
    judge_values,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(i: int, arm: str, tier: str, *, router_tier: str = "weak", propensity: float = 0.5,
           cost: float = 0.001, width: int = 4, sha: str | None = None,
           feature_version: int | None = FEATURE_VERSION) -> TrafficRecord:
    """A plausible answered two-tier decision."""
    return TrafficRecord(
        decision_id=f"d{i}", created_at=T0 + timedelta(seconds=i), arm=arm, propensity=propensity,
        source="router" if arm == "router" else "fixed_arm", requested_model="tierwise-auto",
        decided_tier=tier, tier=tier, model=tier, router_tier=router_tier, status=200,
        input_tokens=100, output_tokens=50, cost_usd=cost, top_tier_cost_usd=0.002,
        latency_ms=10.0 + i % 7, probabilities={"weak": 0.7, "strong": 0.3},
        feature_version=feature_version, features=[float(i % 5)] * width,
        prompt_sha256=sha or f"p{i}",
    )


def write_store(path: Path, records: Sequence[TrafficRecord],
                feedback: Sequence[tuple[str, float]]) -> str:
    """A SQLite store holding ``records`` and ``(decision_id, value)`` labels; returns its URL."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE traffic ({', '.join(f'{c.name} {c.sqlite}' for c in COLUMNS)})")
    conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT, "
                 "created_at TEXT, score REAL, thumbs TEXT, comment TEXT, value REAL NOT NULL)")
    for r in records:
        values = encode_record(r)
        values["created_at"] = r.created_at.isoformat()
        conn.execute(f"INSERT INTO traffic VALUES ({', '.join('?' * len(NAMES))})",
                     tuple(values[n] for n in NAMES))
    for decision_id, value in feedback:
        conn.execute("INSERT INTO feedback (decision_id, created_at, score, value) "
                     "VALUES (?, ?, ?, ?)", (decision_id, T0.isoformat(), value, value))
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def add_judge_labels(url: str, labels: Sequence[JudgeLabel]) -> None:
    """Add ``labels`` to the store at ``url`` (creating the table, as a newer gateway does)."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    for sql in judge_table_sql("sqlite"):
        conn.execute(sql)
    conn.executemany(f"INSERT INTO {JUDGE_TABLE} ({', '.join(JUDGE_NAMES)}) VALUES "
                     f"({', '.join('?' * len(JUDGE_NAMES))})",
                     [(*judge_values(x)[:-1], x.created_at.isoformat()) for x in labels])
    conn.commit()
    conn.close()
