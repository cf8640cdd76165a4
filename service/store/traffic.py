"""The gateway's traffic store: every ``TrafficRecord`` and ``FeedbackRecord``, in SQLite or PG.

One interface (``TrafficStore``), two backends chosen by URL (``open_store``). ``record`` returns
only once the record is committed to disk (SQLite: WAL, ``synchronous=FULL``; PostgreSQL: a
committed transaction), so a gateway that answers after it returns loses no answered record in a
crash. Concurrent records are group-committed: one transaction per batch of waiting records.

The tables, columns and row encoding are ``router_model.traffic_schema``'s (pure, so retraining
reads the store without importing the service).
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from router_model.records import (
    LEDGER,
    LEVERS,
    FeedbackRecord,
    JudgeLabel,
    TrafficRecord,
    choice_part,
    split_ledger,
)
from router_model.traffic_schema import COLUMNS as COLUMNS  # re-exported: tests build SQL on it

if TYPE_CHECKING:
    from service.store.aggregates import Aggregates

logger = logging.getLogger(__name__)


class TierTotals(BaseModel):
    """Aggregates of answered requests for one arm or tier.

    ``levers`` splits ``savings_usd`` into USD per part of ``router_model.records.LEDGER``: the
    tier choice's saving under "routing" only when the router chose ("ab_fixed_arm" for a fixed
    A/B arm, "fail_open" for the default tier), then each lever's; they add up to it.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    top_tier_cost_usd: float = 0.0
    savings_usd: float = 0.0
    levers: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(LEDGER, 0.0))


class ShadowTotals(BaseModel):
    """The shadow labels' own ledger line: what learning from traffic cost (never a saving).

    ``decisions``: decisions with judge labels; ``labels``: tiers graded; ``cost_usd``: the
    shadow calls to the other tiers plus the judge's calls (``JudgeLabel``).
    """

    decisions: int = 0
    labels: int = 0
    cost_usd: float = 0.0


class SavingsReport(BaseModel):
    """Cost against the always-top-tier baseline, over every answered request in the store.

    ``lever_share_pct``: each lever's percentage of the total saving (a lever that cost money,
    such as an escalating cascade, has a negative share); all 0 when nothing was saved.
    ``shadow``: the shadow labels' spend, kept out of ``total`` (it answered no client);
    ``net_savings_usd`` is ``total.savings_usd`` less it.
    """

    total: TierTotals
    savings_pct: float
    lever_share_pct: dict[str, float]
    by_arm: dict[str, TierTotals]
    by_tier: dict[str, TierTotals]
    shadow: ShadowTotals = Field(default_factory=ShadowTotals)
    net_savings_usd: float = 0.0


#: The shadow line of the savings report: decisions, labels and USD of ``judge_labels``.
SHADOW_SQL = ("SELECT COUNT(DISTINCT decision_id), COUNT(*), "
              "COALESCE(SUM(cost_usd + judge_cost_usd), 0) FROM judge_labels")


def with_shadow(report: SavingsReport, row: Sequence[Any] | None) -> SavingsReport:
    """``report`` with its shadow line from a ``SHADOW_SQL`` row."""
    n, labels, usd = row if row is not None else (0, 0, 0.0)
    shadow = ShadowTotals(decisions=int(n or 0), labels=int(labels or 0), cost_usd=float(usd or 0))
    return report.model_copy(update={
        "shadow": shadow, "net_savings_usd": report.total.savings_usd - shadow.cost_usd})


def savings_sql(lever_usd: Callable[[str], str]) -> str:
    """The savings query; ``lever_usd(name)`` is the backend's SQL for one lever's USD (or 0)."""
    levers = ", ".join(f"SUM({lever_usd(name)})" for name in LEVERS)
    return (
        "SELECT arm, tier, source, fail_open, COUNT(*), SUM(input_tokens), SUM(output_tokens), "
        f"SUM(cost_usd), SUM(top_tier_cost_usd), {levers} FROM traffic WHERE status < 400 "
        "GROUP BY arm, tier, source, fail_open"
    )


SQLITE_SAVINGS_SQL = savings_sql(lambda name: f"COALESCE(json_extract(levers, '$.{name}'), 0)")


def savings_report(rows: Sequence[Sequence[Any]]) -> SavingsReport:
    """Fold ``savings_sql`` rows (arm, tier, source, fail_open, n, in, out, cost, top cost,
    levers…) into a report."""
    total, by_arm, by_tier = TierTotals(), dict[str, TierTotals](), dict[str, TierTotals]()

    def add(acc: TierTotals, row: Sequence[Any]) -> TierTotals:
        n, tin, tout, cost, top = (row[4], row[5] or 0, row[6] or 0, row[7] or 0.0, row[8] or 0.0)
        saved = float(top) - float(cost)
        levers = {name: float(v or 0.0) for name, v in zip(LEVERS, row[9:], strict=True)}
        parts = split_ledger(saved, levers, choice_part(str(row[2]), str(row[0]), bool(row[3])))
        return TierTotals(
            requests=acc.requests + int(n), input_tokens=acc.input_tokens + int(tin),
            output_tokens=acc.output_tokens + int(tout), cost_usd=acc.cost_usd + float(cost),
            top_tier_cost_usd=acc.top_tier_cost_usd + float(top),
            savings_usd=acc.savings_usd + saved,
            levers={k: acc.levers.get(k, 0.0) + v for k, v in parts.items()},
        )

    for row in rows:
        total = add(total, row)
        by_arm[row[0]] = add(by_arm.get(row[0], TierTotals()), row)
        by_tier[row[1]] = add(by_tier.get(row[1], TierTotals()), row)
    # percentages to 2 decimals: float noise (79.99999999999999) is not a figure
    pct = (round(100.0 * total.savings_usd / total.top_tier_cost_usd, 2)
           if total.top_tier_cost_usd else 0.0)
    saved = total.savings_usd
    share = {k: round(100.0 * v / saved, 2) if saved > 0 else 0.0
             for k, v in total.levers.items()}
    return SavingsReport(total=total, savings_pct=pct, lever_share_pct=share, by_arm=by_arm,
                         by_tier=by_tier)


def recent_decisions_sql(placeholder: str) -> str:
    """The newest router decisions (router and fixed-arm records, which carry the router's
    probabilities): model version and probabilities JSON, newest first, ``LIMIT`` a parameter."""
    return (
        "SELECT model_version, probabilities FROM traffic WHERE source IN ('router', "
        "'fixed_arm') AND model_version IS NOT NULL AND probabilities <> '{}' "
        f"ORDER BY created_at DESC LIMIT {placeholder}"
    )


def decision_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[str, dict[str, float]]]:
    """``recent_decisions_sql``'s rows decoded; a row whose JSON is not a mapping of numbers is
    skipped (a hand-edited store must not stop the gateway)."""
    out = []
    for version, text in rows:
        try:
            probabilities = {str(k): float(v) for k, v in json.loads(text).items()}
        except (ValueError, TypeError, AttributeError):
            continue
        out.append((str(version), probabilities))
    return out


@dataclass
class _Pending:
    record: TrafficRecord
    future: asyncio.Future[None]


class TrafficStore(ABC):
    """Durable storage of traffic and feedback; ``start`` creates the schema if needed."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[_Pending] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the database, create the tables, and start the group-commit writer.

        Raises:
            InvalidData: when the database cannot be opened or its schema created.
        """
        await self._open()
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(self._queue), name="traffic-writer")

    async def record(self, record: TrafficRecord) -> None:
        """Commit one record; returns once it is durable.

        Raises:
            RuntimeError: when the store is not started.
            Exception: the backend's error when the commit fails.
        """
        if self._queue is None:
            raise RuntimeError("traffic store is not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(record, future))
        await future

    async def aclose(self) -> None:
        """Finish queued writes, stop the writer and close the database."""
        if self._queue is not None and self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self._queue = self._writer = None
        await self._close()

    async def _write_loop(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._write_many([p.record for p in batch])
            except Exception as exc:  # handed to every waiting caller, who decides
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
            else:
                for p in batch:
                    if not p.future.done():
                        p.future.set_result(None)
            for _ in batch:
                queue.task_done()

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _write_many(self, records: list[TrafficRecord]) -> None: ...

    @abstractmethod
    async def add_feedback(self, feedback: FeedbackRecord, tenant: str) -> None:
        """Store a label for a decision ``tenant`` made (committed on return).

        Raises:
            NotFound: when no traffic record has that decision id and tenant (another tenant's
                decision is indistinguishable from one that does not exist).
        """

    @abstractmethod
    async def add_judge_labels(self, labels: Sequence[JudgeLabel]) -> None:
        """Store a judge's per-tier grades of recorded decisions (one transaction; a tier
        already graded for a decision is replaced).

        Raises:
            Exception: the backend's error (for example a decision that is not recorded).
        """

    @abstractmethod
    async def judge_labels_for(self, decision_id: str) -> list[JudgeLabel]:
        """The judge labels stored for one decision, by tier name."""

    @abstractmethod
    async def get(self, decision_id: str) -> TrafficRecord | None:
        """The record of one decision, None when absent."""

    @abstractmethod
    async def feedback_for(self, decision_id: str) -> list[FeedbackRecord]:
        """The labels stored for one decision, oldest first."""

    @abstractmethod
    async def savings(self) -> SavingsReport:
        """Cost and savings against the always-top-tier baseline, by arm and tier."""

    @abstractmethod
    async def recent_decisions(self, limit: int) -> list[tuple[str, dict[str, float]]]:
        """The newest ``limit`` router decisions' ``(model_version, probabilities)``, newest
        first (``service.gateway.levers.budget`` refills its window from them)."""

    @abstractmethod
    async def dashboard(self, window: str) -> Aggregates:
        """The dashboard's figures over ``window`` (``service.store.aggregates.WINDOWS``).

        Raises:
            KeyError: for an unknown window.
            Exception: the backend's error when the store cannot be read.
        """
