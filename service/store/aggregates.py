"""The dashboard's aggregates of the traffic store, computed in SQL (SQLite and PostgreSQL).

Three queries per page: one ``GROUP BY`` over the hourly rollup (``service.store.rollup``: spend,
baseline, savings by part, tier mix per hour or day bucket, the router latency histogram that
gives p50 and p99, requests and cost per A/B arm; a few rows per hour whatever the traffic), one
over the labeled requests (feedback quality per arm: ``service.store.arms``), and the newest
model version (``created_at`` index, backwards).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.store.arms import ABArms, ab_arms, labels_sql
from service.store.rollup import LATENCY_BOUNDS, LATENCY_COLUMNS, SUMS, TABLE
from service.store.traffic import SHADOW_SQL, SavingsReport, savings_report, with_shadow

#: Window name -> (how far back, bucket size); ``None``: every record.
WINDOWS: dict[str, tuple[timedelta | None, Literal["hour", "day"]]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
    "30d": (timedelta(days=30), "day"),
    "all": (None, "day"),
}
DEFAULT_WINDOW = "7d"

#: End of ``savings_sql``'s columns in a ``main_sql`` row (after the bucket key, before the
#: latency count and histogram).
SAVINGS_END = 5 + SUMS.index("latencies")

#: Reads ``sql`` with ``params`` and returns every row (a backend's ``fetch_rows``).
Fetch = Callable[[str, tuple[Any, ...]], Awaitable[list[tuple[Any, ...]]]]


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL here: the placeholder, and how a time is passed
    (SQLite keeps ``created_at`` as ISO 8601 text, PostgreSQL as ``timestamptz``)."""

    placeholder: str
    time: Callable[[datetime], Any]


SQLITE = Dialect("?", datetime.isoformat)
POSTGRES = Dialect("%s", lambda t: t)


class Bucket(BaseModel):
    """One hour or day: answered requests, spend, the all-top-tier baseline, requests by tier."""

    start: str
    requests: int = 0
    cost_usd: float = 0.0
    top_tier_cost_usd: float = 0.0
    tiers: dict[str, int] = Field(default_factory=dict)


class Latency(BaseModel):
    """Percentiles of the router's decision time (what routing adds), in ms, from the rollup's
    histogram (``percentiles``)."""

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
    #: The A/B arms with quality, cost and their CIs (``tierwise ab-report``'s figures).
    ab: ABArms


def main_sql(d: Dialect, bucket: str) -> str:
    """Per bucket and (arm, tier, source, fail_open), from the rollup: ``savings_sql``'s
    columns plus the count of router latencies; the bucket key first."""
    key = "hour" if bucket == "hour" else "substr(hour, 1, 10)"
    sums = ", ".join(f"SUM({c})" for c in SUMS)
    return (
        f"SELECT {key} AS b, arm, tier, source, fail_open, {sums} FROM {TABLE} "
        f"WHERE hour >= {d.placeholder} GROUP BY b, arm, tier, source, fail_open"
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


def percentiles(histogram: Sequence[int], ps: Sequence[float]) -> list[float | None]:
    """Nearest-rank percentiles from the rollup's latency histogram, interpolated within the
    bucket geometrically (its bounds are a factor 1.5 apart); None without samples."""
    n = sum(histogram)
    out: list[float | None] = []
    for p in ps:
        if n == 0:
            out.append(None)
            continue
        rank, seen, k = max(1, math.ceil(p * n)), 0, 0
        while seen + histogram[k] < rank:
            seen += histogram[k]
            k += 1
        count = histogram[k]
        if k >= len(LATENCY_BOUNDS):  # above the last bound: that bound, a lower limit
            out.append(LATENCY_BOUNDS[-1])
            continue
        hi = LATENCY_BOUNDS[k]
        lo = LATENCY_BOUNDS[k - 1] if k else hi / 1.5
        out.append(lo * (hi / lo) ** ((rank - seen) / count))
    return out


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
    hour = (start or datetime(1970, 1, 1, tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H")
    rows = await fetch(main_sql(d, bucket), (hour,))
    width = len(LATENCY_COLUMNS)
    histogram = [sum(int(r[-width + k] or 0) for r in rows) for k in range(width)]
    p50, p99 = percentiles(histogram, (0.50, 0.99))
    latency = Latency(samples=sum(histogram), p50_ms=p50, p99_ms=p99)
    version = await fetch(VERSION_SQL, ())
    epoch = start or datetime(1970, 1, 1, tzinfo=UTC)
    # the shadow labels' spend in the window
    shadow = await fetch(f"{SHADOW_SQL} WHERE created_at >= {d.placeholder}", (d.time(epoch),))
    labels = await fetch(labels_sql(d.placeholder), (d.time(epoch), d.time(epoch)))
    ab = await asyncio.to_thread(ab_arms, rows, labels)  # a few ms of resampling: off the loop
    return Aggregates(
        window=window, bucket=bucket, since=start,
        savings=with_shadow(savings_report([r[1:SAVINGS_END] for r in rows]),
                            shadow[0] if shadow else None),
        series=series(rows),
        latency=latency,
        model_version=str(version[0][0]) if version else None, ab=ab,
    )
