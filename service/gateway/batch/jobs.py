"""The batch window's job store: one row per deferred request, in the traffic store's database.

Table ``batch_jobs`` (SQLite or PostgreSQL, chosen by the same URL as the traffic store), so any
gateway replica answers for any job. A job moves ``queued`` -> ``claimed`` (one replica took it
for a batch file) -> ``submitted`` (in an upstream batch) -> ``completed`` | ``failed``. Every
move is one conditional ``UPDATE … RETURNING``: a claim only takes rows still ``queued``
(PostgreSQL also skips rows another replica holds locked), so two replicas never put one request
in two batches. ``lease_until`` bounds a claim and a poll: past it another replica may take over;
the replica working on one renews it (``renew``, ``renew_batch``) until it is done.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_model.errors import InvalidData
from router_model.traffic_schema import store_location
from service.store.pg_link import PgLink
from service.store.sqlite import connect_sqlite

#: The columns of ``batch_jobs`` in order, with their SQLite and PostgreSQL types.
_COLUMNS = (
    ("id", "TEXT PRIMARY KEY", "TEXT PRIMARY KEY"),
    ("tenant", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("tier", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("created_at", "REAL NOT NULL", "DOUBLE PRECISION NOT NULL"),
    ("request", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("draft", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("batch_id", "TEXT", "TEXT"),
    ("lease_until", "REAL NOT NULL DEFAULT 0", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
    ("result", "TEXT", "TEXT"),
    ("error", "TEXT", "TEXT"),
    ("finished_at", "REAL", "DOUBLE PRECISION"),
)
_NAMES = ", ".join(c[0] for c in _COLUMNS)
#: PostgreSQL advisory lock key held while the schema is created ("tw_batch" in ASCII).
_SCHEMA_LOCK = 0x74775F6261746368
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS batch_jobs_queue ON batch_jobs(status, tier, created_at)",
    "CREATE INDEX IF NOT EXISTS batch_jobs_batch ON batch_jobs(batch_id)",
)


@dataclass(frozen=True)
class Job:
    """One deferred request: its forwarded body, its traffic record draft, and its outcome."""

    id: str
    tenant: str
    tier: str
    status: str
    created_at: float
    #: The chat body as forwarded upstream (``tierwise`` member removed, ``model`` not yet set).
    request: dict[str, Any]
    #: The ``TrafficRecord`` fields known when the request was queued (decision, features, …).
    draft: dict[str, Any]
    batch_id: str | None = None
    lease_until: float = 0.0
    #: The upstream's chat completion (``completed``) and the failure (``failed``).
    result: dict[str, Any] | None = None
    error: str | None = None
    finished_at: float | None = None

    def row(self) -> tuple[Any, ...]:
        """The job as a ``batch_jobs`` row (JSON members as text)."""
        return (
            self.id, self.tenant, self.tier, self.status, self.created_at,
            json.dumps(self.request), json.dumps(self.draft), self.batch_id, self.lease_until,
            None if self.result is None else json.dumps(self.result), self.error,
            self.finished_at,
        )

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """Inverse of ``row``."""
        (id_, tenant, tier, status, created, request, draft, batch, lease, result, error,
         finished) = row
        return cls(id_, tenant, tier, status, float(created), json.loads(request),
                   json.loads(draft), batch, float(lease),
                   None if result is None else json.loads(result), error,
                   None if finished is None else float(finished))


class JobStore(ABC):
    """The ``batch_jobs`` table; every public call is one committed transaction."""

    #: Added inside the claim's sub-select (PostgreSQL: skip rows another replica has locked).
    _claim_lock = ""

    async def start(self) -> None:
        """Open the database and create the table if needed.

        Raises:
            InvalidData: when the database cannot be opened.
        """
        await self._open()
        await self._create((f"CREATE TABLE IF NOT EXISTS batch_jobs ({self._schema()})",
                            *_INDEXES))

    @abstractmethod
    async def aclose(self) -> None:
        """Close the database."""

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    def _schema(self) -> str: ...

    async def _create(self, statements: tuple[str, ...]) -> None:
        for sql in statements:
            await self._run(sql, ())

    @abstractmethod
    async def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run one statement (``?`` placeholders) in its own transaction; returns its rows."""

    async def add(self, job: Job) -> None:
        """Queue a job (committed on return)."""
        marks = ", ".join("?" * len(_COLUMNS))
        await self._run(f"INSERT INTO batch_jobs ({_NAMES}) VALUES ({marks})", job.row())

    async def get(self, job_id: str, tenant: str) -> Job | None:
        """The job, None when absent or another tenant's (the two are indistinguishable)."""
        rows = await self._run(
            f"SELECT {_NAMES} FROM batch_jobs WHERE id = ? AND tenant = ?", (job_id, tenant)
        )
        return Job.from_row(rows[0]) if rows else None

    async def release_expired(self, now: float) -> int:
        """Put jobs whose claim lapsed before submission back in the queue; returns how many."""
        rows = await self._run(
            "UPDATE batch_jobs SET status = 'queued', batch_id = NULL, lease_until = 0 "
            "WHERE status = 'claimed' AND lease_until < ? RETURNING id", (now,)
        )
        return len(rows)

    async def queued(self, tier: str) -> tuple[int, float | None]:
        """How many jobs of ``tier`` wait, and when the oldest was queued."""
        rows = await self._run(
            "SELECT COUNT(*), MIN(created_at) FROM batch_jobs WHERE status = 'queued' "
            "AND tier = ?", (tier,)
        )
        count, oldest = rows[0]
        return int(count), None if oldest is None else float(oldest)

    async def claim(self, tier: str, limit: int, token: str, until: float) -> list[Job]:
        """Take up to ``limit`` queued jobs of ``tier``, oldest first, for one batch file."""
        rows = await self._run(
            "UPDATE batch_jobs SET status = 'claimed', batch_id = ?, lease_until = ? "
            "WHERE status = 'queued' AND id IN (SELECT id FROM batch_jobs WHERE "
            f"status = 'queued' AND tier = ? ORDER BY created_at, id LIMIT ?{self._claim_lock}) "
            f"RETURNING {_NAMES}", (token, until, tier, limit),
        )
        return sorted((Job.from_row(r) for r in rows), key=lambda j: (j.created_at, j.id))

    async def renew(self, token: str, until: float) -> int:
        """Extend claim ``token`` to ``until``; returns how many jobs it still holds.

        0 means the claim was lost: its lease lapsed and another replica re-queued the jobs.
        """
        rows = await self._run(
            "UPDATE batch_jobs SET lease_until = ? WHERE status = 'claimed' AND batch_id = ? "
            "RETURNING id", (until, token)
        )
        return len(rows)

    async def submitted(self, token: str, batch_id: str) -> int:
        """Claimed jobs are now in upstream batch ``batch_id`` (poll at once); returns how many."""
        rows = await self._run(
            "UPDATE batch_jobs SET status = 'submitted', batch_id = ?, lease_until = 0 "
            "WHERE status = 'claimed' AND batch_id = ? RETURNING id", (batch_id, token)
        )
        return len(rows)

    async def open_batches(self, now: float) -> list[tuple[str, str]]:
        """``(batch_id, tier)`` of submitted batches nobody is polling now."""
        rows = await self._run(
            "SELECT DISTINCT batch_id, tier FROM batch_jobs WHERE status = 'submitted' "
            "AND lease_until < ? ORDER BY batch_id", (now,)
        )
        return [(str(b), str(t)) for b, t in rows]

    async def lease_batch(self, batch_id: str, now: float, until: float) -> list[Job]:
        """Take the poll of a batch until ``until``: its still open jobs, [] when another has it."""
        rows = await self._run(
            "UPDATE batch_jobs SET lease_until = ? WHERE status = 'submitted' AND batch_id = ? "
            f"AND lease_until < ? RETURNING {_NAMES}", (until, batch_id, now)
        )
        return [Job.from_row(r) for r in rows]

    async def renew_batch(self, batch_id: str, until: float) -> int:
        """Extend this replica's poll of a batch to ``until``; returns its jobs still open."""
        rows = await self._run(
            "UPDATE batch_jobs SET lease_until = ? WHERE status = 'submitted' AND batch_id = ? "
            "RETURNING id", (until, batch_id)
        )
        return len(rows)

    async def release_batch(self, batch_id: str, until: float) -> None:
        """End this replica's poll of a batch still running; anyone may poll it after ``until``.

        Why a time and not "now": every replica runs the loop, and one poll per interval is
        enough for the batch, however many replicas there are.
        """
        await self._run(
            "UPDATE batch_jobs SET lease_until = ? WHERE status = 'submitted' AND batch_id = ? "
            "RETURNING id", (until, batch_id)
        )

    async def finish(self, job: Job, result: dict[str, Any] | None, error: str | None,
                     now: float) -> bool:
        """Complete (``result``) or fail (``error``) a job not yet finished; False if it was.

        The request body (the prompt) is dropped: it is not needed any more, and the traffic
        store keeps prompts only where ``traffic.store_prompts`` allows.
        """
        status = "completed" if result is not None else "failed"
        rows = await self._run(
            "UPDATE batch_jobs SET status = ?, result = ?, error = ?, finished_at = ?, "
            "lease_until = 0, request = '{}' "
            "WHERE id = ? AND status IN ('queued', 'claimed', 'submitted') "
            "RETURNING id",
            (status, None if result is None else json.dumps(result), error, now, job.id),
        )
        return bool(rows)

    async def purge(self, finished_before: float) -> int:
        """Delete jobs finished before ``finished_before`` (answers fetched or abandoned)."""
        rows = await self._run(
            "DELETE FROM batch_jobs WHERE status IN ('completed', 'failed') "
            "AND finished_at < ? RETURNING id", (finished_before,)
        )
        return len(rows)


class SqliteJobStore(JobStore):
    """SQLite (WAL, ``synchronous=FULL``); every call runs on one dedicated thread.

    SQLite runs one writer at a time per database file, so each conditional update is atomic
    also between gateway processes sharing the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="batch-jobs-sqlite")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open_sync)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidData(f"batch job store {self.path}: cannot open ({exc})") from exc

    def _open_sync(self) -> None:
        conn = connect_sqlite(self.path)
        self._conn = conn

    def _schema(self) -> str:
        return ", ".join(f"{name} {lite}" for name, lite, _ in _COLUMNS)

    async def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self._executor is None:
            raise RuntimeError("batch job store is not started")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run_sync, sql, params
        )

    def _run_sync(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self._conn is None:
            raise RuntimeError("batch job store is not started")
        with self._conn as conn:  # one transaction, committed on exit
            # IMMEDIATE: take the write lock up front, so a claim never upgrades a read lock
            conn.execute("BEGIN IMMEDIATE")
            return conn.execute(sql, params).fetchall()

    async def aclose(self) -> None:
        if self._executor is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
        self._executor = None


class PostgresJobStore(JobStore):
    """PostgreSQL (psycopg 3, async): one connection, each statement its own transaction."""

    _claim_lock = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        self._pg = PgLink(url, "batch job store")

    async def _open(self) -> None:
        await self._pg.open()

    def _schema(self) -> str:
        return ", ".join(f"{name} {pg}" for name, _, pg in _COLUMNS)

    async def _create(self, statements: tuple[str, ...]) -> None:
        # Why the lock: replicas starting together on a new database would race on CREATE
        # TABLE IF NOT EXISTS (PostgreSQL's catalog raises a unique violation for the loser).
        async with self._pg.lock:
            conn = await self._pg.get()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for sql in statements:
                    await conn.execute(sql)

    async def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        async with self._pg.lock:
            conn = await self._pg.get()
            async with conn.transaction():
                cur = await conn.execute(sql.replace("?", "%s"), params)
                return await cur.fetchall() if cur.description is not None else []

    async def aclose(self) -> None:
        await self._pg.close()


def open_job_store(url: str) -> JobStore:
    """The job store at the traffic store's ``sqlite:///PATH`` or ``postgresql://…`` URL.

    Raises:
        InvalidData: for any other URL.
    """
    backend, where = store_location(url, "batch job store")
    return SqliteJobStore(Path(where)) if backend == "sqlite" else PostgresJobStore(where)
