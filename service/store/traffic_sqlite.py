"""The SQLite backend of the traffic store: one connection on one dedicated thread."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from router_model.errors import InvalidData, NotFound
from router_model.records import FeedbackRecord, JudgeLabel, TrafficRecord
from router_model.traffic_schema import (
    ADDED,
    COLUMNS,
    FEEDBACK_COLUMNS,
    JUDGE_NAMES,
    JUDGE_TABLE,
    NAMES,
    decode_record,
    encode_record,
    feedback_from_row,
    feedback_values,
    judge_from_row,
    judge_table_sql,
    judge_values,
)
from service.store.aggregates import SQLITE, Aggregates, aggregates
from service.store.rollup import EXISTS_SQLITE, sqlite_ddl
from service.store.sqlite import connect_sqlite
from service.store.traffic import (
    SHADOW_SQL,
    SQLITE_SAVINGS_SQL,
    SavingsReport,
    TrafficStore,
    decision_rows,
    recent_decisions_sql,
    savings_report,
    with_shadow,
)

logger = logging.getLogger(__name__)


class SqliteTrafficStore(TrafficStore):
    """SQLite in WAL mode with ``synchronous=FULL``; every call runs on one dedicated thread."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("traffic store is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="traffic-sqlite")
        try:
            await self._call(self._open_sync)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidData(f"traffic store {self.path}: cannot open ({exc})") from exc

    def _open_sync(self) -> None:
        conn = connect_sqlite(self.path)
        conn.execute("PRAGMA foreign_keys=ON")
        cols = ", ".join(f"{c.name} {c.sqlite}" for c in COLUMNS)
        conn.execute(f"CREATE TABLE IF NOT EXISTS traffic ({cols})")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "decision_id TEXT NOT NULL REFERENCES traffic(decision_id), created_at TEXT NOT NULL, "
            "score REAL, thumbs TEXT, comment TEXT, value REAL NOT NULL)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS traffic_created_at ON traffic(created_at)")
        conn.execute("CREATE INDEX IF NOT EXISTS feedback_decision ON feedback(decision_id)")
        for sql in judge_table_sql("sqlite"):  # an older store gains the table here too
            conn.execute(sql)
        _add_new_columns(conn)
        _add_rollup(conn)
        self._conn = conn

    async def _close(self) -> None:
        if self._executor is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._call(conn.close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("traffic store is not started")
        return self._conn

    async def _write_many(self, records: list[TrafficRecord]) -> None:
        await self._call(self._write_many_sync, records)

    def _write_many_sync(self, records: list[TrafficRecord]) -> None:
        rows = []
        for r in records:
            values = encode_record(r)
            values["created_at"] = r.created_at.isoformat()
            rows.append(tuple(values[n] for n in NAMES))
        sql = f"INSERT INTO traffic ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})"
        with self._db() as conn:  # one transaction, committed (and fsynced) on exit
            conn.execute("BEGIN")
            conn.executemany(sql, rows)

    async def add_feedback(self, feedback: FeedbackRecord, tenant: str) -> None:
        await self._call(self._add_feedback_sync, feedback, tenant)

    def _add_feedback_sync(self, feedback: FeedbackRecord, tenant: str) -> None:
        values = list(feedback_values(feedback))
        values[1] = feedback.created_at.isoformat()
        with self._db() as conn:
            conn.execute("BEGIN")
            cur = conn.execute(
                f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}, value) "
                "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM traffic WHERE decision_id = ? AND tenant = ?)",
                (*values, feedback.decision_id, tenant),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no decision with id {feedback.decision_id!r}")

    async def add_judge_labels(self, labels: Sequence[JudgeLabel]) -> None:
        rows = [(*judge_values(x)[:-1], x.created_at.isoformat()) for x in labels]
        sql = (f"INSERT OR REPLACE INTO {JUDGE_TABLE} ({', '.join(JUDGE_NAMES)}) "
               f"VALUES ({', '.join('?' * len(JUDGE_NAMES))})")

        def write() -> None:
            with self._db() as conn:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)

        await self._call(write)

    async def judge_labels_for(self, decision_id: str) -> list[JudgeLabel]:
        sql = (f"SELECT {', '.join(JUDGE_NAMES)} FROM {JUDGE_TABLE} WHERE decision_id = ? "
               "ORDER BY tier")
        rows = await self._call(lambda: self._db().execute(sql, (decision_id,)).fetchall())
        return [judge_from_row(r) for r in rows]

    async def get(self, decision_id: str) -> TrafficRecord | None:
        row = await self._call(self._fetch_one, decision_id)
        return decode_record(dict(zip(NAMES, row, strict=True))) if row is not None else None

    def _fetch_one(self, decision_id: str) -> Any:
        sql = f"SELECT {', '.join(NAMES)} FROM traffic WHERE decision_id = ?"
        return self._db().execute(sql, (decision_id,)).fetchone()

    async def feedback_for(self, decision_id: str) -> list[FeedbackRecord]:
        cols = ", ".join(FEEDBACK_COLUMNS)
        sql = f"SELECT {cols} FROM feedback WHERE decision_id = ? ORDER BY id"
        rows = await self._call(lambda: self._db().execute(sql, (decision_id,)).fetchall())
        return [feedback_from_row(r) for r in rows]

    async def savings(self) -> SavingsReport:
        rows = await self._call(lambda: self._db().execute(SQLITE_SAVINGS_SQL).fetchall())
        shadow = await self._call(lambda: self._db().execute(SHADOW_SQL).fetchone())
        return with_shadow(savings_report(rows), shadow)

    async def recent_decisions(self, limit: int) -> list[tuple[str, dict[str, float]]]:
        sql = recent_decisions_sql("?")
        return decision_rows(await self._call(
            lambda: self._db().execute(sql, (limit,)).fetchall()))

    async def dashboard(self, window: str) -> Aggregates:
        return await aggregates(self._fetch_rows, SQLITE, window)

    async def _fetch_rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._call(
            lambda: self._db().execute(sql, params).fetchall())
        return rows


def _add_new_columns(conn: sqlite3.Connection) -> None:
    """Add the ``ADDED`` columns an older table lacks (one writer at a time: BEGIN IMMEDIATE)."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        present = {row[1] for row in conn.execute("PRAGMA table_info(traffic)")}
        for column in ADDED:
            if column.name not in present:
                logger.info("traffic store: adding column %s to an older table", column.name)
                conn.execute(f"ALTER TABLE traffic ADD COLUMN {column.name} {column.sqlite}")


def _add_rollup(conn: sqlite3.Connection) -> None:
    """Create (and backfill) the hourly rollup and its trigger if the store has none yet."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute(EXISTS_SQLITE).fetchone() is None:
            logger.info("traffic store: building the hourly rollup of the dashboard")
            for statement in sqlite_ddl():
                conn.execute(statement)
