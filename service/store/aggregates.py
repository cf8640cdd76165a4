"""The dashboard's aggregates of the traffic store, computed in SQL (SQLite and PostgreSQL).

Four queries per page: one ``GROUP BY`` over the hourly rollup (``service.store.rollup``: spend,
baseline, savings by part and tier mix per hour or day bucket; a few rows per hour whatever the
traffic), two nearest-rank percentiles of the router's added latency read off an index
(``LIMIT 1 OFFSET k`` from the nearer end), and the newest model version (``created_at`` index,
backwards).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.store.rollup import SUMS, TABLE
from service.store.traffic import SavingsReport, savings_report

#: Window name -> (how far back, bucket size); ``None``: every record.
WINDOWS: dict[str, tuple[timedelta | None, Literal["hour", "day"]]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
    "30d": (timedelta(days=30), "day"),
    "all": (None, "day"),
}
DEFAULT_WINDOW = "7d"

#: The index the latency percentiles read (created with the tables by both backends).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS traffic_router_latency ON traffic(router_latency_ms, "
    "created_at, status)",
)

#: Reads ``sql`` with ``params`` and returns every row (a backend's ``fetch_rows``).
Fetch = Callable[[str, tuple[Any, ...]], Awaitable[list[tuple[Any, ...]]]]


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL here: placeholders and time parameters."""

    placeholder: str
    time_param: Callable[[datetime], Any]


SQLITE = Dialect("?", lambda t: t.isoformat())
POSTGRES = Dialect("%s", lambda t: t)


class Bucket(BaseModel):
    """One hour or day: answered requests, spend, the all-top-tier baseline, requests by tier."""

    start: str
    requests: int = 0
    cost_usd: float = 0.0
    top_tier_cost_usd: float = 0.0
    tiers: dict[str, int] = Field(default_factory=dict)


class Latency(BaseModel):
    """Nearest-rank percentiles of the router's decision time (what routing adds), in ms."""

    samples: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None


class Aggregates(BaseModel):
    """Everything the dashboard reads from the store for one window."""

    window: str
    bucket: Literal["hour", "day"]
    since: datetime | None
    savings: SavingsReport
    series: list[Bucket]
    latency: Latency
    model_version: str | None


def main_sql(d: Dialect, bucket: str) -> str:
    """Per bucket and (arm, tier, source, fail_open), from the rollup: ``savings_sql``'s
    columns plus the count of router latencies; the bucket key first."""
    key = "hour" if bucket == "hour" else "substr(hour, 1, 10)"
    sums = ", ".join(f"SUM({c})" for c in SUMS)
    return (
        f"SELECT {key} AS b, arm, tier, source, fail_open, {sums} FROM {TABLE} "
        f"WHERE hour >= {d.placeholder} GROUP BY b, arm, tier, source, fail_open"
    )


def rank_sql(d: Dialect, descending: bool) -> str:
    """The router latency at an offset, from the low or the high end."""
    order = "DESC" if descending else "ASC"
    p = d.placeholder
    return (
        "SELECT router_latency_ms FROM traffic WHERE router_latency_ms IS NOT NULL AND "
        f"created_at >= {p} AND status < 400 ORDER BY router_latency_ms {order} LIMIT 1 "
        f"OFFSET {p}"
    )


VERSION_SQL = (
    "SELECT model_version FROM traffic WHERE model_version IS NOT NULL "
    "ORDER BY created_at DESC LIMIT 1"
)


def series(rows: Sequence[Sequence[Any]]) -> list[Bucket]:
    """``main_sql`` rows folded into buckets, oldest first."""
    found: dict[str, Bucket] = {}
    for row in rows:
        b = found.setdefault(str(row[0]), Bucket(start=str(row[0])))
        tier = str(row[2]) or "none"
        b.requests += int(row[5])
        b.cost_usd += float(row[8] or 0.0)
        b.top_tier_cost_usd += float(row[9] or 0.0)
        b.tiers[tier] = b.tiers.get(tier, 0) + int(row[5])
    return [found[k] for k in sorted(found)]


async def percentile(
    fetch: Fetch, d: Dialect, since: Any, n: int, p: float
) -> float | None:
    """The nearest-rank ``p`` percentile of ``n`` router latencies, read from the nearer end."""
    if n == 0:
        return None
    rank = max(1, math.ceil(p * n))  # 1-based
    descending = rank > n // 2
    offset = n - rank if descending else rank - 1
    rows = await fetch(rank_sql(d, descending), (since, offset))
    return float(rows[0][0]) if rows else None


async def aggregates(fetch: Fetch, d: Dialect, window: str, now: datetime | None = None
                     ) -> Aggregates:
    """The dashboard's figures for ``window`` (a ``WINDOWS`` key).

    Raises:
        KeyError: for an unknown window.
        Exception: the backend's error when the store cannot be read.
    """
    back, bucket = WINDOWS[window]
    # whole hours: the rollup's rows, and the latencies counted in them, start on the hour
    start = None if back is None else (
        ((now or datetime.now(UTC)) - back).replace(minute=0, second=0, microsecond=0))
    since = d.time_param(start or datetime(1970, 1, 1, tzinfo=UTC))
    hour = (start or datetime(1970, 1, 1, tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H")
    rows = await fetch(main_sql(d, bucket), (hour,))
    n = sum(int(r[-1] or 0) for r in rows)
    latency = Latency(samples=n, p50_ms=await percentile(fetch, d, since, n, 0.50),
                      p99_ms=await percentile(fetch, d, since, n, 0.99))
    version = await fetch(VERSION_SQL, ())
    return Aggregates(
        window=window, bucket=bucket, since=start,
        savings=savings_report([r[1:-1] for r in rows]), series=series(rows), latency=latency,
        model_version=str(version[0][0]) if version else None,
    )
