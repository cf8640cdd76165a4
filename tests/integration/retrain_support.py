"""A labeled traffic store and a registered champion for ``tierwise retrain`` tests, built
directly (no gateway): every prompt answered by both tiers, its fixture scores as feedback."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from router_model.features import FEATURE_VERSION
from router_model.records import JudgeLabel, TrafficRecord
from router_model.tiers import load_tiers
from router_model.traffic_schema import (
    COLUMNS,
    JUDGE_NAMES,
    JUDGE_TABLE,
    NAMES,
    encode_record,
    judge_table_sql,
    judge_values,
)
from training import registry
from training.data import LabeledRow, read_labeled, write_labeled
from training.dataset import build_dataset, make_context

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "fixtures" / "routellm_small.jsonl"
TIERS = load_tiers(REPO / "data" / "tiers" / "routellm.yaml")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def labeled_store(path: Path, rows: Sequence[LabeledRow]) -> str:
    """A SQLite traffic store where each row was answered by both tiers and scored; its URL."""
    ds = build_dataset(rows, TIERS, make_context("hand", None), tolerance=0.0, source="fixture")
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE traffic ({', '.join(f'{c.name} {c.sqlite}' for c in COLUMNS)})")
    conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT, "
                 "created_at TEXT, score REAL, thumbs TEXT, comment TEXT, value REAL NOT NULL)")
    for i, row in enumerate(ds.rows):
        for j, tier in enumerate(TIERS):
            rec = TrafficRecord(
                decision_id=f"d{i}-{j}", created_at=T0 + timedelta(seconds=i), arm="router",
                propensity=1.0, source="router", requested_model="tierwise-auto",
                decided_tier=tier.name, tier=tier.name, model=tier.model,
                router_tier=tier.name, status=200, input_tokens=100, output_tokens=50,
                feature_version=FEATURE_VERSION, features=ds.X[i].tolist(),
                prompt_sha256=f"p{i}", prompt=row.prompt)
            values = encode_record(rec)
            values["created_at"] = rec.created_at.isoformat()
            conn.execute(f"INSERT INTO traffic VALUES ({', '.join('?' * len(NAMES))})",
                         tuple(values[n] for n in NAMES))
            score = float(ds.scores[i, j])
            conn.execute("INSERT INTO feedback (decision_id, created_at, score, value) "
                         "VALUES (?, ?, ?, ?)", (rec.decision_id, T0.isoformat(), score, score))
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def champion_store(tmp: Path, bundle: Path, name: str = "tiny_fast") -> str:
    """A fresh MLflow SQLite registry with ``bundle`` registered as ``name``'s champion."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    registry.log_and_register(uri, name=name, bundle_dir=bundle, params={}, metrics={},
                              alias=registry.CHAMPION)
    return uri


def fixture_rows(n: int | None = None, start: int = 0) -> list[LabeledRow]:
    """Rows of the fixture file (``n`` of them from ``start``; all by default)."""
    rows = read_labeled(DATA)
    return rows[start:] if n is None else rows[start: start + n]


def write_rows(path: Path, rows: Sequence[LabeledRow]) -> Path:
    """``rows`` as a labeled JSONL file."""
    write_labeled(rows, path)
    return path


def judged_store(path: Path, rows: Sequence[LabeledRow], by_prompt: bool = False) -> str:
    """A SQLite traffic store where each row was answered by the weak tier only, with no
    feedback, and a judge graded both tiers (rating 1 + 9 x its fixture score); its URL.
    ``by_prompt``: a row's ``prompt_sha256`` is its prompt's, as the gateway's (else ``p{i}``)."""
    ds = build_dataset(rows, TIERS, make_context("hand", None), tolerance=0.0, source="fixture")
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE traffic ({', '.join(f'{c.name} {c.sqlite}' for c in COLUMNS)})")
    conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT, "
                 "created_at TEXT, score REAL, thumbs TEXT, comment TEXT, value REAL NOT NULL)")
    for sql in judge_table_sql("sqlite"):
        conn.execute(sql)
    weak = TIERS[0]
    for i, row in enumerate(ds.rows):
        rec = TrafficRecord(
            decision_id=f"d{i}", created_at=T0 + timedelta(seconds=i), arm="router",
            propensity=1.0, source="router", requested_model="tierwise-auto",
            decided_tier=weak.name, tier=weak.name, model=weak.model, router_tier=weak.name,
            status=200, input_tokens=100, output_tokens=50, feature_version=FEATURE_VERSION,
            features=ds.X[i].tolist(), prompt=row.prompt,
            prompt_sha256=hashlib.sha256(row.prompt.encode()).hexdigest() if by_prompt else f"p{i}")
        values = encode_record(rec)
        values["created_at"] = rec.created_at.isoformat()
        conn.execute(f"INSERT INTO traffic VALUES ({', '.join('?' * len(NAMES))})",
                     tuple(values[n] for n in NAMES))
        for j, tier in enumerate(TIERS):
            rating = int(round(1 + 9 * float(ds.scores[i, j])))
            label = JudgeLabel(decision_id=rec.decision_id, tier=tier.name, model=tier.model,
                               score=(rating - 1) / 9, rating=rating, judge=TIERS[-1].model,
                               created_at=T0)
            conn.execute(f"INSERT INTO {JUDGE_TABLE} ({', '.join(JUDGE_NAMES)}) VALUES "
                         f"({', '.join('?' * len(JUDGE_NAMES))})",
                         (*judge_values(label)[:-1], T0.isoformat()))
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"
