"""Time of the dashboard's page data on a large traffic store (SQLite, and PostgreSQL if given).

Not a test (``tests/unit/bench/test_bench_dashboard.py`` runs ``--quick``).
``python bench/bench_dashboard.py [--records 1000000] [--postgres-url postgresql://…]``: a store
is filled with ``--records`` synthetic records spread over the last 30 days (70% weak tier, 2%
failed, 10% with a cache or trim saving, 10% in an ``always_strong`` A/B arm, 5% with a feedback
label: the A/B arms' quality) as an older store without the dashboard's rollup,
which the next start builds (backfill timed); then ``TrafficStore.dashboard`` is timed
per window (median of ``--repeats``), with the page's HTML rendering. The PostgreSQL part runs in
a fresh database, dropped at the end. ``--json`` writes the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from router_model.records import TrafficRecord  # noqa: E402
from router_model.traffic_schema import NAMES, encode_record  # noqa: E402
from service.gateway.dashboard_page import dashboard_html  # noqa: E402
from service.store.aggregates import WINDOWS  # noqa: E402
from service.store.backends import open_store  # noqa: E402
from service.store.rollup import TABLE  # noqa: E402
from service.store.traffic import TrafficStore  # noqa: E402

TARGET_S = 1.0
CHUNK = 50_000


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


FEEDBACK = ("decision_id", "created_at", "score", "value")
Chunk = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def rows(n: int, seed: int, sqlite: bool) -> Iterator[Chunk]:
    """``n`` synthetic traffic rows in ``NAMES`` order, and feedback rows (``FEEDBACK``), in
    chunks of ``CHUNK``."""
    rng = np.random.default_rng(seed)
    template = encode_record(TrafficRecord(
        decision_id="x", arm="router", propensity=1.0, source="router",
        requested_model="tierwise-auto", decided_tier="weak", tier="weak", model="weak-model",
        status=200, probabilities={"weak": 0.7, "strong": 0.3}, model_version="bench:v1",
        feature_version=1, features=[0.0] * 8, prompt_sha256="0" * 12))
    now = datetime.now(UTC)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        ages, weak, fail = rng.uniform(0, 30 * 86400, m), rng.random(m) < 0.7, rng.random(m)
        tin, tout = rng.integers(10, 2000, m), rng.integers(5, 800, m)
        lat, lever = rng.lognormal(0.0, 0.6, m), rng.random(m)
        fixed_arm, labeled, score = rng.random(m) < 0.1, rng.random(m) < 0.05, rng.integers(0, 5, m)
        weak &= ~fixed_arm
        top = (tin * 10 + tout * 30) / 1e6
        cost = np.where(weak, (tin + tout) * 0.6 / 1e6, top)
        created = [now - timedelta(seconds=float(a)) for a in ages]
        columns: dict[str, Any] = {
            "decision_id": [f"{start + i + 1:032x}" for i in range(m)],
            "created_at": [c.isoformat() for c in created] if sqlite else created,
            "tier": np.where(weak, "weak", "strong").tolist(),
            "arm": np.where(fixed_arm, "always_strong", "router").tolist(),
            "source": np.where(fixed_arm, "fixed_arm", "router").tolist(),
            "status": np.where(fail < 0.02, 502, 200).tolist(),
            "input_tokens": tin.tolist(), "output_tokens": tout.tolist(),
            "cost_usd": cost.tolist(), "top_tier_cost_usd": top.tolist(),
            "latency_ms": (lat * 300).tolist(), "router_latency_ms": lat.tolist(),
            "levers": [json.dumps({"cache": t}) if v < 0.05 else
                       json.dumps({"trim": t / 10}) if v < 0.1 else "{}"
                       for t, v in zip(top.tolist(), lever.tolist(), strict=True)],
        }
        fixed = dict(template)
        if sqlite:
            fixed["stream"], fixed["fail_open"] = int(fixed["stream"]), 0
        chunk = list(zip(*(columns[c] if c in columns else repeat(fixed[c], m) for c in NAMES),
                         strict=False))
        labels = [(columns["decision_id"][i], columns["created_at"][i], score[i] / 4,
                   score[i] / 4) for i in np.flatnonzero(labeled).tolist()]
        yield chunk, labels


def fill_sqlite(path: Path, n: int, seed: int) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        # an older store: no dashboard index, no rollup; the next start builds them
        db.execute(f"DROP TRIGGER IF EXISTS {TABLE}_add")
        db.execute(f"DROP TABLE IF EXISTS {TABLE}")
        marks = ", ".join("?" * len(NAMES))
        for chunk, labels in rows(n, seed, sqlite=True):
            db.executemany(f"INSERT INTO traffic ({', '.join(NAMES)}) VALUES ({marks})", chunk)
            db.executemany(f"INSERT INTO feedback ({', '.join(FEEDBACK)}) VALUES (?, ?, ?, ?)",
                           [tuple(float(x) if i > 1 else x for i, x in enumerate(r))
                            for r in labels])


def fill_postgres(url: str, n: int, seed: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(f"DROP TRIGGER IF EXISTS {TABLE}_add ON traffic")
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        feedback: list[tuple[Any, ...]] = []
        with conn.cursor() as cur, cur.copy(f"COPY traffic ({', '.join(NAMES)}) FROM STDIN") as cp:
            for chunk, labels in rows(n, seed, sqlite=False):
                feedback += labels
                for row in chunk:
                    cp.write_row(row)
        with conn.cursor() as cur, cur.copy(
                f"COPY feedback ({', '.join(FEEDBACK)}) FROM STDIN") as cp:
            for row in feedback:
                cp.write_row(row)
    with psycopg.connect(url, autocommit=True) as conn:  # as autovacuum would, in time
        conn.execute("VACUUM ANALYZE traffic")


async def started(url: str) -> TrafficStore:
    store = open_store(url)
    await store.start()
    return store


async def measure(url: str, fill: Any, n: int, repeats: int) -> dict[str, Any]:
    """Fill the store at ``url``, build its indexes and time every window's page data."""
    store = await started(url)  # the schema
    await store.aclose()
    t0 = time.perf_counter()
    await asyncio.to_thread(fill, n)
    filled = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = await started(url)  # builds (backfills) the rollup of the filled table
    indexed = time.perf_counter() - t0
    result: dict[str, Any] = {"records": n, "fill_s": filled, "index_s": indexed, "windows": {}}
    try:
        for window in WINDOWS:
            times, found = [], None
            for _ in range(repeats):
                t0 = time.perf_counter()
                found = await store.dashboard(window)
                times.append(time.perf_counter() - t0)
            assert found is not None
            t0 = time.perf_counter()
            doc = found.model_dump(mode="json") | {"breakers": {}, "budget": None,
                                                   "generated_at": "now"}
            dashboard_html(doc, found.series, ["weak", "strong"])
            result["windows"][window] = {
                "median_s": statistics.median(times), "max_s": max(times),
                "render_s": time.perf_counter() - t0, "requests": found.savings.total.requests,
                "buckets": len(found.series), "p99_ms": found.latency.p99_ms,
                "labeled": sum(a.labeled for a in found.ab.arms.values())}
        result["all_time_savings_requests"] = (await store.savings()).total.requests
    finally:
        await store.aclose()
    return result


def report(name: str, result: dict[str, Any]) -> None:
    out(f"{name}: {result['records']:,} records (fill {result['fill_s']:.1f} s, dashboard "
        f"rollup backfilled at start in {result['index_s']:.1f} s)")
    for window, w in result["windows"].items():
        verdict = "ok" if w["median_s"] < TARGET_S else "OVER TARGET"
        out(f"  window {window:>3}: page data median {w['median_s'] * 1000:7.1f} ms, max "
            f"{w['max_s'] * 1000:7.1f} ms, HTML {w['render_s'] * 1000:5.1f} ms; "
            f"{w['requests']:,} answered requests in {w['buckets']} buckets, "
            f"{w['labeled']:,} labeled [{verdict}]")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--postgres-url", default=None, help="a server to create a database on")
    parser.add_argument("--quick", action="store_true", help="20,000 records, 2 repeats")
    parser.add_argument("--json", type=Path, default=None, help="write the timings here")
    args = parser.parse_args(argv)
    n, repeats = (20_000, 2) if args.quick else (args.records, args.repeats)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tierwise-bench-dash-") as tmp:
        path = Path(tmp) / "traffic.db"
        results["sqlite"] = asyncio.run(measure(
            f"sqlite:///{path}", lambda k: fill_sqlite(path, k, args.seed), n, repeats))
        report("SQLite", results["sqlite"])
    if args.postgres_url:
        name = f"tierwise_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = urlsplit(args.postgres_url)._replace(path="/" + name).geturl()
        try:
            results["postgresql"] = asyncio.run(measure(
                url, lambda k: fill_postgres(url, k, args.seed), n, repeats))
            report("PostgreSQL", results["postgresql"])
        finally:
            with psycopg.connect(args.postgres_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
