"""The response cache shared by gateway replicas: one PostgreSQL table and a local vector mirror.

Exact lookups read the row by key. Semantic lookups search this replica's mirror of the table's
embeddings (a ``VectorIndex``, filled at start, pulled every ``refresh_s``, updated at once by
this replica's own writes) and confirm the best candidates by key in the table, where expiry and
deletion are checked. A periodic sweep (one replica at a time) deletes expired rows and the oldest
past ``max_entries``. Hits do not write, so eviction is oldest-first. All times are the database
server's. Why PostgreSQL without pgvector: ``service.gateway.levers.cache.response``.

Three connections per replica: lookups (one statement at a time, each bounded by ``timeout_s``;
a failed one is reopened by the background loop within ``refresh_s``, lookups missing meanwhile),
the writer (a bounded queue written in batches), and the background refresh and sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg.types.json import Json

from router_model.encoder import EMBEDDING_DIM
from router_model.traffic_schema import PG_CLIENT_ENCODING
from service.gateway.levers.cache.index import VectorIndex
from service.gateway.levers.cache.store import (
    CANDIDATES,
    CacheKey,
    CacheSettings,
    ErrorHook,
    Stored,
    scope_id,
)

logger = logging.getLogger(__name__)

TABLE = "response_cache"
#: Seconds between sweeps (expired rows, then the oldest past ``max_entries``).
SWEEP_S = 30.0
#: Rows created this long before the newest one seen are pulled again by the refresh: an insert
#: stamped earlier may commit after a later one, and would otherwise never reach the mirror.
LOOKBACK = timedelta(seconds=5)
#: Seconds a connection attempt may take (libpq's own minimum is 2).
CONNECT_S = 3.0
#: Advisory lock ids: table creation, and the sweep (one replica at a time).
_CREATE_LOCK, _SWEEP_LOCK = 7_311_001, 7_311_002
_ERRORS = (psycopg.Error, OSError, TimeoutError)

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, scope TEXT NOT NULL, "
    "doc JSON NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, tier TEXT NOT NULL, "
    "embedding BYTEA, created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), "
    "expires_at TIMESTAMPTZ NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_scope ON {TABLE}(scope)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expires ON {TABLE}(expires_at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_created ON {TABLE}(created_at)",
    # the canonical layer's key (a table created before it gets the column)
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS canonical TEXT",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_canonical ON {TABLE}(canonical)",
)
_UPSERT = (
    f"INSERT INTO {TABLE} (key, scope, doc, cost_usd, tier, embedding, canonical, expires_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s)) "
    "ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, cost_usd = EXCLUDED.cost_usd, "
    "canonical = EXCLUDED.canonical, tier = EXCLUDED.tier, "
    f"embedding = coalesce(EXCLUDED.embedding, {TABLE}.embedding), "
    "created_at = clock_timestamp(), expires_at = EXCLUDED.expires_at"
)
_EXACT = f"SELECT doc, cost_usd, tier FROM {TABLE} WHERE key = %s AND expires_at > now()"
#: The newest live entry of a canonical form (``canonical`` is a digest of the scope and form).
_CANONICAL = (
    f"SELECT key, doc, cost_usd, tier FROM {TABLE} WHERE canonical = %s AND expires_at > now() "
    "ORDER BY created_at DESC LIMIT 1"
)
_CONFIRM = (
    f"SELECT key, doc, cost_usd, tier FROM {TABLE} "
    "WHERE key = ANY(%s::text[]) AND scope = %s AND expires_at > now()"
)
_NEW_ROWS = (
    f"SELECT key, scope, embedding, created_at FROM {TABLE} WHERE embedding IS NOT NULL "
    "AND created_at > %s AND expires_at > now() AND key <> ALL(%s::text[]) "
    "ORDER BY created_at LIMIT %s"
)
_DROP = f"DELETE FROM {TABLE} WHERE key = ANY(%s::text[])"
#: Rows per refresh query: a large table fills the mirror in pages, each within the timeout.
PAGE = 2000
#: Entries waiting to be written (past it new ones are dropped and counted), and per round trip.
WRITE_QUEUE, WRITE_BATCH = 10_000, 500
_LIVE_KEYS = f"SELECT key FROM {TABLE} WHERE embedding IS NOT NULL AND expires_at > now()"
_SWEEP = (
    f"DELETE FROM {TABLE} WHERE expires_at <= now()",
    f"DELETE FROM {TABLE} WHERE key IN (SELECT key FROM {TABLE} "
    "ORDER BY created_at DESC, key OFFSET %s)",
)
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")

Conn = psycopg.AsyncConnection[Any]


class PostgresCacheStore:
    """Entries in PostgreSQL, embeddings mirrored in memory; failures are misses, never errors."""

    def __init__(self, settings: CacheSettings, on_error: ErrorHook) -> None:
        assert settings.url is not None
        self._settings = settings
        self._url = settings.url
        self._on_error = on_error
        #: Lookups (statements of a few hundred µs), the writer and the background refresh and
        #: sweep each have a connection: neither of the others queues before a lookup.
        self._conn: Conn | None = None
        self._bg: Conn | None = None
        self._wconn: Conn | None = None
        self._lookup_lock = asyncio.Lock()
        self._writes: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(WRITE_QUEUE)
        self._writer: asyncio.Task[None] | None = None
        self._index = VectorIndex()
        self._recent: dict[str, datetime] = {}
        self._since = _EPOCH
        self._swept = 0.0
        self._down = False
        self._task: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()

    def __len__(self) -> int:
        """Entries with an embedding in this replica's mirror."""
        return len(self._index)

    async def start(self) -> None:
        """Connect, create the table, fill the mirror, then keep it fresh in the background.

        An unreachable database is logged and retried every ``refresh_s``; it never raises.
        """
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="cache-store-refresh")
        self._task.add_done_callback(_report_crash)
        self._writer = asyncio.create_task(self._write_loop(), name="cache-store-writer")
        self._writer.add_done_callback(_report_crash)

    async def aclose(self) -> None:
        await self.flush()
        for task in (self._task, self._writer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._writer = None
        if self._abandoned:  # statements a hung server never answered: do not wait for long
            await asyncio.wait(list(self._abandoned), timeout=CONNECT_S)
        for conn in (self._conn, self._bg, self._wconn):
            if conn is not None:
                await conn.close()
        self._conn = self._bg = self._wconn = None

    async def flush(self) -> None:
        if self._writer is not None and not self._writer.done():  # else nothing would write
            await self._writes.join()

    async def exact(self, key: CacheKey) -> Stored | None:
        rows = await self._query("lookup", _EXACT, (key.exact,))
        if not rows:
            return None
        doc, cost, tier = rows[0]
        return Stored(doc, float(cost), tier, key.exact)

    async def canonical(self, key: CacheKey) -> Stored | None:
        rows = await self._query("lookup", _CANONICAL, (key.canonical,))
        if not rows:
            return None
        exact, doc, cost, tier = rows[0]
        return Stored(doc, float(cost), tier, exact)

    async def nearest(
        self, key: CacheKey, vector: NDArray[np.float32]
    ) -> tuple[Stored, float] | None:
        found = self._index.search(scope_id(key.scope), vector, self._settings.similarity,
                                   CANDIDATES)
        if not found:
            return None
        rows = await self._query("lookup", _CONFIRM, ([k for k, _ in found], key.scope))
        if rows is None:
            return None
        live = {k: Stored(doc, float(cost), tier, k) for k, doc, cost, tier in rows}
        for owner, similarity in found:
            if owner in live:
                return live[owner], similarity
            self._index.remove(owner)  # expired or deleted since the mirror saw it
        return None

    async def drop(self, keys: list[str]) -> None:
        """Delete the rows (after the queued writes, which could bring them back)."""
        for k in keys:
            self._index.remove(k)
        await self.flush()
        await self._query("drop", _DROP, (keys,))

    def put(self, key: CacheKey, stored: Stored, vector: NDArray[np.float32] | None) -> None:
        if vector is not None:
            self._index.add(key.exact, scope_id(key.scope), vector)
        blob = vector.astype("<f4").tobytes() if vector is not None else None
        params = (key.exact, key.scope, Json(stored.doc), stored.cost_usd, stored.tier, blob,
                  key.canonical, self._settings.ttl_s)
        try:
            self._writes.put_nowait(params)
        except asyncio.QueueFull:
            self._failed("store", "write queue full")

    async def _write_loop(self) -> None:
        """Write queued entries in batches (one round trip each) on the writer's connection."""
        while True:
            batch = [await self._writes.get()]
            while len(batch) < WRITE_BATCH and not self._writes.empty():
                batch.append(self._writes.get_nowait())
            try:
                if self._wconn is None or self._wconn.closed or self._wconn.broken:
                    self._wconn = await _connect(self._url)
                async with asyncio.timeout(max(self._settings.timeout_s, CONNECT_S)):
                    async with self._wconn.cursor() as cur:
                        await cur.executemany(_UPSERT, batch)
            except _ERRORS as exc:
                for _ in batch:
                    self._failed("store", exc)
                if self._wconn is not None:
                    await _close(self._wconn)
                self._wconn = None
            finally:
                for _ in batch:
                    self._writes.task_done()

    async def _query(
        self, op: str, sql: str, params: Sequence[Any]
    ) -> list[tuple[Any, ...]] | None:
        """Rows of one statement on the request connection; None (counted) when it failed.

        Why a task and ``asyncio.wait`` rather than ``asyncio.timeout``: psycopg answers the
        cancellation of a running statement by asking the server to cancel it, for up to 10 s,
        and a hung server would hold the request that long; here that happens in the background.
        """
        if not self.connected:
            self._failed(op, "not connected")
            return None
        limit = self._settings.timeout_s
        try:  # a burst of lookups waits here: being busy is a miss, not a broken connection
            async with asyncio.timeout(limit):
                await self._lookup_lock.acquire()
        except TimeoutError:
            self._on_error(op)
            return None
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:  # dropped while this one waited
                self._failed(op, "not connected")
                return None
            task = asyncio.ensure_future(_rows(conn, sql, params))
            done, _ = await asyncio.wait({task}, timeout=limit)
        finally:
            self._lookup_lock.release()
        error = task.exception() if done else TimeoutError(f"no answer within {limit} s")
        if error is None:
            return task.result()
        if not isinstance(error, _ERRORS):
            raise error
        # the connection is in an unknown state: drop it, and let the background loop reopen
        if self._conn is conn:  # not a fresh one the background loop opened meanwhile
            self._conn = None
        if done:
            await _close(conn)
        else:  # psycopg cancels the statement on the server, then the connection is closed
            dropping = asyncio.create_task(_abandon(task, conn))
            self._abandoned.add(dropping)
            dropping.add_done_callback(self._abandoned.discard)
        self._failed(op, error)
        return None

    def _failed(self, op: str, why: object) -> None:
        self._on_error(op)
        if not self._down:
            self._down = True
            logger.warning("response cache (PostgreSQL): %s failed (%s); lookups miss until "
                           "it is back", op, why)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.refresh_s)
            await self.refresh()

    @property
    def connected(self) -> bool:
        """Whether lookups currently reach the database (False during an outage)."""
        return self._conn is not None and not (self._conn.closed or self._conn.broken)

    async def refresh(self) -> None:
        """Reconnect where needed, pull new embeddings, and sweep when it is time (what the
        background loop does every ``refresh_s``); failures are logged and counted."""
        try:
            if self._bg is None or self._bg.closed or self._bg.broken:
                self._bg = await _connect(self._url)
                await _create_table(self._bg)
            if not self.connected:
                self._conn = await _connect(self._url)
            await self._refresh(self._bg)
            if time.monotonic() - self._swept >= SWEEP_S:
                await self.sweep()
        except _ERRORS as exc:
            self._failed("refresh", exc)
            if self._bg is not None:
                await _close(self._bg)
                self._bg = None
            return
        if self._down:
            self._down = False
            logger.info("response cache (PostgreSQL): reachable again")

    async def _refresh(self, conn: Conn) -> None:
        """Pull rows created since the last pull (minus ``LOOKBACK``), a page at a time."""
        while True:
            async with asyncio.timeout(max(self._settings.timeout_s, CONNECT_S)):
                cur = await conn.execute(_NEW_ROWS, (self._since, list(self._recent), PAGE))
                rows = await cur.fetchall()
            for key, scope, blob, created in rows:
                vector = np.frombuffer(blob, dtype="<f4")
                if vector.shape == (EMBEDDING_DIM,) and key not in self._index:
                    self._index.add(key, scope_id(scope), vector)
                self._recent[key] = created
            if rows:
                self._since = max(self._since, rows[-1][3] - LOOKBACK)
                self._recent = {k: t for k, t in self._recent.items() if t > self._since}
            if len(rows) < PAGE:
                return

    async def sweep(self) -> None:
        """Delete expired rows and the oldest past ``max_entries`` (one replica at a time),
        then forget mirrored keys whose rows are gone.

        Raises:
            psycopg.Error, OSError, TimeoutError: when the database fails (the caller counts it).
        """
        conn = self._bg
        if conn is None:
            raise psycopg.OperationalError("response cache store is not connected")
        self._swept = time.monotonic()
        async with asyncio.timeout(max(self._settings.timeout_s, CONNECT_S) * 4):
            async with conn.transaction():
                cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_SWEEP_LOCK,))
                locked = await cur.fetchone()
                if locked is not None and locked[0]:
                    await conn.execute(_SWEEP[0])
                    await conn.execute(_SWEEP[1], (self._settings.max_entries,))
            cur = await conn.execute(_LIVE_KEYS)
            live = [row[0] for row in await cur.fetchall()]
        for gone in self._index.retain(live):
            self._recent.pop(gone, None)


async def _rows(conn: Conn, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall() if cur.description is not None else []


def _report_crash(task: asyncio.Task[None]) -> None:
    """Log the background loop's end unless it was cancelled (the mirror stops refreshing)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("response cache (PostgreSQL): background refresh stopped",
                     exc_info=task.exception())


async def _abandon(task: asyncio.Future[Any], conn: Conn) -> None:
    """Cancel a statement that did not answer in time, then close its connection (closing
    first would pull the socket from under psycopg's wait on it)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await _close(conn)


async def _connect(url: str) -> Conn:
    # synchronous_commit off: a server crash may lose the last answers, never corrupt the table
    async with asyncio.timeout(CONNECT_S):
        return await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=int(CONNECT_S),
            client_encoding=PG_CLIENT_ENCODING, options="-c synchronous_commit=off",
        )


async def _create_table(conn: Conn) -> None:
    # concurrent CREATE TABLE IF NOT EXISTS from two replicas can still collide in the catalogue
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        for sql in _SCHEMA:
            await conn.execute(sql)


async def _close(conn: Conn) -> None:
    try:
        await conn.close()
    except _ERRORS as exc:
        logger.debug("response cache (PostgreSQL): closing a failed connection: %s", exc)
