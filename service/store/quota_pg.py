"""Per-key request, token and spend counts shared by the gateway's replicas through PostgreSQL.

One row per tenant per window (``minute`` or ``day``, numbered from the epoch). Admission is one
atomic upsert that adds the request only while the minute row is under both per-minute limits,
so replicas never admit more between them than the limits allow; charging adds the recorded
tokens to the minute row and the cost to the day row. Rows of past windows are deleted at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from router_model.errors import InvalidData
from service.store.pg_link import PgLink

TABLE = "tierwise_quota"
_DDL = (f"CREATE TABLE IF NOT EXISTS {TABLE} (tenant TEXT NOT NULL, kind TEXT NOT NULL, "
        "window_start BIGINT NOT NULL, requests BIGINT NOT NULL DEFAULT 0, "
        "tokens BIGINT NOT NULL DEFAULT 0, spend_usd DOUBLE PRECISION NOT NULL DEFAULT 0, "
        "PRIMARY KEY (tenant, kind, window_start))")
_ADMIT = (f"INSERT INTO {TABLE} AS q (tenant, kind, window_start, requests) "
          "VALUES (%s, 'minute', %s, 1) ON CONFLICT (tenant, kind, window_start) DO UPDATE "
          "SET requests = q.requests + 1 WHERE q.requests < %s AND q.tokens < %s "
          "RETURNING requests")
_ADD = (f"INSERT INTO {TABLE} AS q (tenant, kind, window_start, tokens, spend_usd) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant, kind, window_start) DO UPDATE "
        "SET tokens = q.tokens + EXCLUDED.tokens, spend_usd = q.spend_usd + EXCLUDED.spend_usd")
_SPEND = f"SELECT spend_usd FROM {TABLE} WHERE tenant = %s AND kind = 'day' AND window_start = %s"
_USED = (f"SELECT requests, tokens FROM {TABLE} WHERE tenant = %s AND kind = 'minute' "
         "AND window_start = %s")
#: Larger than any limit: a limit left unset.
NO_LIMIT = 2**62


@dataclass(frozen=True)
class Windows:
    """The windows a request falls in and the per-minute limits (``NO_LIMIT`` when unset)."""

    minute: int
    day: int
    requests_per_minute: int
    tokens_per_minute: int


class PgQuotaCounts:
    """The shared counts (one connection, statements under its lock)."""

    def __init__(self, url: str) -> None:
        self._pg = PgLink(url, "quota store")

    async def open(self, current_day: int) -> None:
        """Create the table, drop the rows of past days.

        Raises:
            InvalidData: when the server cannot be reached or refuses.
        """
        conn = await self._pg.open()
        try:
            async with conn.transaction():
                await conn.execute(_DDL)
                await conn.execute(f"DELETE FROM {TABLE} WHERE (kind = 'day' AND "
                                   "window_start < %s) OR (kind = 'minute' AND "
                                   "window_start < %s)", (current_day, current_day * 1440))
        except psycopg.Error as exc:
            raise InvalidData(f"{self._pg.cannot_open} ({exc})") from exc

    async def close(self) -> None:
        await self._pg.close()

    async def spend(self, tenant: str, day: int) -> float:
        """What ``tenant`` was charged on ``day`` (raises psycopg.Error when unreachable)."""
        row = await self._one(_SPEND, (tenant, day))
        return float(row[0]) if row else 0.0

    async def admit(self, tenant: str, w: Windows) -> tuple[int, int] | None:
        """Count one request if the minute is under both limits: None when counted, else the
        minute's (requests, tokens) that refused it (raises psycopg.Error when unreachable)."""
        row = await self._one(_ADMIT, (tenant, w.minute, w.requests_per_minute,
                                       w.tokens_per_minute))
        if row is not None:
            return None
        used = await self._one(_USED, (tenant, w.minute))
        return (int(used[0]), int(used[1])) if used else (0, 0)

    async def charge(self, tenant: str, w: Windows, tokens: int, cost_usd: float) -> None:
        """Add tokens to the minute and cost to the day (raises psycopg.Error when unreachable)."""
        async with self._pg.lock:
            conn = await self._pg.get()
            async with conn.transaction():
                await conn.execute(_ADD, (tenant, "minute", w.minute, tokens, 0.0))
                await conn.execute(_ADD, (tenant, "day", w.day, 0, cost_usd))

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with self._pg.lock:
            conn = await self._pg.get()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchone()
