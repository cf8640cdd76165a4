"""The traffic store's schema: tables, columns, row encoding (shared by gateway and training).

Pure (stdlib + ``router_model.records``), so retraining can read the store without the service.
Table ``traffic`` has one column per ``TrafficRecord`` field (``COLUMNS``, same names and order),
primary key ``decision_id``; ``features`` is little-endian float32 bytes, ``probabilities`` and
``levers`` JSON text. Columns added after a store's first release (``ADDED``) are added to an
existing table when a store starts, and readers tolerate their absence (``select_list``).
Table ``feedback`` holds ``FeedbackRecord`` rows (``id``, ``decision_id`` referencing
``traffic``, ``created_at``, ``score``, ``thumbs``, ``comment``, and ``value``: the label as a
number in [0, 1]). Table ``judge_labels`` holds ``JudgeLabel`` rows (``JUDGE_COLUMNS``): a
judge's per-tier grades of a decision's prompt, apart from client feedback; a store that predates
it gains the table when it starts (``CREATE TABLE IF NOT EXISTS``), and readers treat its absence
as no judge labels.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from router_model.errors import InvalidData
from router_model.records import FeedbackRecord, JudgeLabel, TrafficRecord

TRAFFIC_TABLE = "traffic"
#: The client encoding of every PostgreSQL connection: text comes back as str even from a
#: database created without one (SQL_ASCII, what ``initdb`` makes under the C locale), where
#: psycopg would otherwise return bytes and no key, tier or id would compare equal.
PG_CLIENT_ENCODING = "utf8"
FEEDBACK_TABLE = "feedback"
JUDGE_TABLE = "judge_labels"


@dataclass(frozen=True)
class Column:
    """One column of the ``traffic`` table: its name and SQL type in each backend."""

    name: str
    sqlite: str
    postgres: str


COLUMNS: tuple[Column, ...] = (
    Column("schema_version", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    Column("decision_id", "TEXT PRIMARY KEY", "TEXT PRIMARY KEY"),
    Column("created_at", "TEXT NOT NULL", "TIMESTAMPTZ NOT NULL"),
    Column("arm", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("propensity", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    Column("source", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("requested_model", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("decided_tier", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("tier", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("model", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("router_tier", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("status", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    Column("stream", "INTEGER NOT NULL", "BOOLEAN NOT NULL"),
    Column("failovers", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    Column("fail_open", "INTEGER NOT NULL", "BOOLEAN NOT NULL"),
    Column("input_tokens", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    Column("output_tokens", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    Column("usage_source", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("cost_usd", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    Column("top_tier_cost_usd", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    Column("latency_ms", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    Column("router_latency_ms", "REAL", "DOUBLE PRECISION"),
    Column("quality", "REAL", "DOUBLE PRECISION"),
    Column("min_tier", "TEXT", "TEXT"),
    Column("max_tier", "TEXT", "TEXT"),
    Column("probabilities", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("model_version", "TEXT", "TEXT"),
    Column("feature_version", "INTEGER", "INTEGER"),
    Column("features", "BLOB NOT NULL", "BYTEA NOT NULL"),
    Column("prompt_sha256", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("prompt", "TEXT", "TEXT"),
    Column("levers", "TEXT NOT NULL DEFAULT '{}'", "TEXT NOT NULL DEFAULT '{}'"),
    Column("tenant", "TEXT NOT NULL DEFAULT ''", "TEXT NOT NULL DEFAULT ''"),
    Column("cache_layer", "TEXT NOT NULL DEFAULT ''", "TEXT NOT NULL DEFAULT ''"),
    Column("cache_similarity", "REAL", "DOUBLE PRECISION"),
)
NAMES = tuple(c.name for c in COLUMNS)

#: Columns newer than the first ``traffic`` table, in the order they were added. Each has a
#: default, so ``ALTER TABLE traffic ADD COLUMN`` works on a table that already holds rows.
ADDED: tuple[Column, ...] = tuple(c for c in COLUMNS if c.name in (
    "levers", "tenant", "cache_layer", "cache_similarity"))
_ADDED_NAMES = frozenset(c.name for c in ADDED)


def select_list(present: Collection[str]) -> str:
    """The SELECT list of ``NAMES`` for a ``traffic`` table that has the columns ``present``.

    An ``ADDED`` column the table lacks is read as NULL (``decode_record`` gives the record's
    default); every other column is named, so a table that is not a traffic table still fails.
    """
    return ", ".join(
        f"NULL AS {n}" if n in _ADDED_NAMES and n not in present else n for n in NAMES
    )


#: Columns of ``feedback`` that hold ``FeedbackRecord`` fields (``id`` and ``value`` aside).
FEEDBACK_COLUMNS = ("decision_id", "created_at", "score", "thumbs", "comment")


def encode_record(record: TrafficRecord) -> dict[str, Any]:
    """Column values of a record (features as float32 bytes, probabilities and levers as JSON)."""
    values = record.model_dump()
    values["features"] = record.features_blob()
    values["probabilities"] = json.dumps(record.probabilities, sort_keys=True)
    values["levers"] = json.dumps(record.levers, sort_keys=True)
    return values


def decode_record(values: dict[str, Any]) -> TrafficRecord:
    """The record of a row (inverse of ``encode_record``); NULL ``levers``, ``tenant`` and
    ``cache_layer`` (older tables) are {}, "" and "".

    Raises:
        pydantic.ValidationError: when the row does not hold a valid record.
    """
    doc = dict(values)
    doc["features"] = TrafficRecord.features_from_blob(bytes(doc["features"] or b""))
    doc["probabilities"] = json.loads(doc["probabilities"] or "{}")
    doc["levers"] = json.loads(doc.get("levers") or "{}")
    doc["tenant"] = doc.get("tenant") or ""
    doc["cache_layer"] = doc.get("cache_layer") or ""
    return TrafficRecord.model_validate(doc)


def feedback_values(feedback: FeedbackRecord) -> tuple[Any, ...]:
    """The ``FEEDBACK_COLUMNS`` values of a label, then its ``value``."""
    doc = feedback.model_dump()
    return (*(doc[c] for c in FEEDBACK_COLUMNS), feedback.value)


def feedback_from_row(row: Sequence[Any]) -> FeedbackRecord:
    """The label of a ``FEEDBACK_COLUMNS`` row.

    Raises:
        pydantic.ValidationError: when the row does not hold a valid label.
    """
    return FeedbackRecord.model_validate(dict(zip(FEEDBACK_COLUMNS, row, strict=True)))


#: Columns of ``judge_labels`` (every ``JudgeLabel`` field), with their SQL types per backend.
JUDGE_COLUMNS: tuple[Column, ...] = (
    Column("decision_id", "TEXT NOT NULL REFERENCES traffic(decision_id)",
           "TEXT NOT NULL REFERENCES traffic(decision_id)"),
    Column("tier", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("model", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("score", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    Column("rating", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    Column("judge", "TEXT NOT NULL", "TEXT NOT NULL"),
    Column("cost_usd", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    Column("judge_cost_usd", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    Column("created_at", "TEXT NOT NULL", "TIMESTAMPTZ NOT NULL"),
)
JUDGE_NAMES = tuple(c.name for c in JUDGE_COLUMNS)


def judge_table_sql(backend: Literal["sqlite", "postgres"]) -> list[str]:
    """The statements that create ``judge_labels`` and its index when absent (older stores)."""
    cols = ", ".join(f"{c.name} {getattr(c, backend)}" for c in JUDGE_COLUMNS)
    return [f"CREATE TABLE IF NOT EXISTS {JUDGE_TABLE} ({cols}, PRIMARY KEY (decision_id, tier))",
            f"CREATE INDEX IF NOT EXISTS judge_decision ON {JUDGE_TABLE}(decision_id)"]


def judge_values(label: JudgeLabel) -> tuple[Any, ...]:
    """The ``JUDGE_NAMES`` values of a judge label (``created_at`` as the datetime)."""
    doc = label.model_dump()
    return tuple(doc[n] for n in JUDGE_NAMES)


def judge_from_row(row: Sequence[Any]) -> JudgeLabel:
    """The judge label of a ``JUDGE_NAMES`` row.

    Raises:
        pydantic.ValidationError: when the row does not hold a valid label.
    """
    return JudgeLabel.model_validate(dict(zip(JUDGE_NAMES, row, strict=True)))


SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def store_location(url: str, what: str = "traffic") -> tuple[Literal["sqlite", "postgres"], str]:
    """Which backend a store URL names, and where: ``("sqlite", PATH)`` or ``("postgres", URL)``.

    Raises:
        InvalidData: for any other URL (``what`` names the store in the message).
    """
    if url.startswith(SQLITE_PREFIX):
        return "sqlite", url[len(SQLITE_PREFIX):]
    if url.startswith(POSTGRES_PREFIXES):
        return "postgres", url
    raise InvalidData(f"{what} url must be sqlite:///PATH or postgresql://…, got {url[:16]}…")
