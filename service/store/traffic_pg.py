"""The PostgreSQL backend of the traffic store (psycopg 3, async), same tables as SQLite's."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

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
from service.store.aggregates import POSTGRES, Aggregates, aggregates
from service.store.pg_link import PgLink
from service.store.rollup import EXISTS_PG, PG_LOCK, postgres_ddl
from service.store.traffic import (
    SHADOW_SQL,
    SavingsReport,
    TrafficStore,
    decision_rows,
    recent_decisions_sql,
    savings_report,
    savings_sql,
    with_shadow,
)

logger = logging.getLogger(__name__)

POSTGRES_SAVINGS_SQL = savings_sql(
    lambda name: f"COALESCE((levers::jsonb ->> '{name}')::double precision, 0)"
)


class PostgresTrafficStore(TrafficStore):
    """One async connection; every transaction holds a lock, writes are group-committed."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._pg = PgLink(url, "traffic store")
        self._lock = self._pg.lock

    async def _open(self) -> None:
        conn = await self._pg.open()
        cols = ", ".join(f"{c.name} {c.postgres}" for c in COLUMNS)
        try:
            async with conn.transaction():
                await conn.execute(f"CREATE TABLE IF NOT EXISTS traffic ({cols})")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS feedback (id BIGSERIAL PRIMARY KEY, "
                    "decision_id TEXT NOT NULL REFERENCES traffic(decision_id), "
                    "created_at TIMESTAMPTZ NOT NULL, score DOUBLE PRECISION, thumbs TEXT, "
                    "comment TEXT, value DOUBLE PRECISION NOT NULL)"
                )
                await conn.execute(
                    "CREATE INDEX IF NOT EXISTS traffic_created_at ON traffic(created_at)"
                )
                await conn.execute(
                    "CREATE INDEX IF NOT EXISTS feedback_decision ON feedback(decision_id)"
                )
                for sql in judge_table_sql("postgres"):  # older stores gain it too
                    await conn.execute(sql)
                for column in ADDED:  # an older table gains the newer columns
                    await conn.execute(
                        f"ALTER TABLE traffic ADD COLUMN IF NOT EXISTS {column.name} "
                        f"{column.postgres}"
                    )
                await conn.execute(PG_LOCK)
                found = await (await conn.execute(EXISTS_PG)).fetchone()
                if found is None or not found[0]:  # created once, backfilled from the table
                    for statement in postgres_ddl():
                        await conn.execute(statement)
        except psycopg.Error as exc:
            raise InvalidData(f"{self._pg.cannot_open} ({exc})") from exc

    async def _close(self) -> None:
        await self._pg.close()

    async def _write_many(self, records: list[TrafficRecord]) -> None:
        rows = []
        for r in records:
            values = encode_record(r)
            rows.append(tuple(values[n] for n in NAMES))
        sql = f"INSERT INTO traffic ({', '.join(NAMES)}) VALUES ({', '.join(['%s'] * len(NAMES))})"
        async with self._lock:
            conn = await self._pg.get()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(sql, rows)

    async def add_feedback(self, feedback: FeedbackRecord, tenant: str) -> None:
        sql = (
            f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}, value) "
            "SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS "
            "(SELECT 1 FROM traffic WHERE decision_id = %s AND tenant = %s)"
        )
        async with self._lock:
            conn = await self._pg.get()
            async with conn.transaction():
                cur = await conn.execute(
                    sql, (*feedback_values(feedback), feedback.decision_id, tenant))
            if cur.rowcount == 0:
                raise NotFound(f"no decision with id {feedback.decision_id!r}")

    async def add_judge_labels(self, labels: Sequence[JudgeLabel]) -> None:
        names = ", ".join(JUDGE_NAMES)
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in JUDGE_NAMES[2:])
        marks = ", ".join(["%s"] * len(JUDGE_NAMES))
        sql = (f"INSERT INTO {JUDGE_TABLE} ({names}) VALUES ({marks})"
               f" ON CONFLICT (decision_id, tier) DO UPDATE SET {updates}")
        async with self._lock:
            conn = await self._pg.get()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(sql, [judge_values(x) for x in labels])

    async def judge_labels_for(self, decision_id: str) -> list[JudgeLabel]:
        sql = (f"SELECT {', '.join(JUDGE_NAMES)} FROM {JUDGE_TABLE} WHERE decision_id = %s "
               "ORDER BY tier")
        return [judge_from_row(r) for r in await self._fetch(sql, (decision_id,), one=False)]

    async def get(self, decision_id: str) -> TrafficRecord | None:
        sql = f"SELECT {', '.join(NAMES)} FROM traffic WHERE decision_id = %s"
        row = await self._fetch(sql, (decision_id,), one=True)
        return decode_record(dict(zip(NAMES, row, strict=True))) if row else None

    async def feedback_for(self, decision_id: str) -> list[FeedbackRecord]:
        sql = (
            f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM feedback WHERE decision_id = %s "
            "ORDER BY id"
        )
        rows = await self._fetch(sql, (decision_id,), one=False)
        return [feedback_from_row(r) for r in rows]

    async def savings(self) -> SavingsReport:
        report = savings_report(await self._fetch(POSTGRES_SAVINGS_SQL, (), one=False))
        return with_shadow(report, await self._fetch(SHADOW_SQL, (), one=True))

    async def recent_decisions(self, limit: int) -> list[tuple[str, dict[str, float]]]:
        return decision_rows(await self._fetch(recent_decisions_sql("%s"), (limit,), one=False))

    async def dashboard(self, window: str) -> Aggregates:
        return await aggregates(self._fetch_rows, POSTGRES, window)

    async def _fetch_rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._fetch(sql, params, one=False)
        return rows

    async def _fetch(self, sql: str, params: tuple[Any, ...], *, one: bool) -> Any:
        async with self._lock:
            conn = await self._pg.get()
            async with conn.transaction():
                cur = await conn.execute(sql, params)
                return await cur.fetchone() if one else await cur.fetchall()
