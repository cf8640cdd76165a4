"""Lookup latency of the response cache's stores: in-process memory against shared PostgreSQL.

Not a test. ``python bench/bench_cache_store.py --postgres-url postgresql://… [--entries N]``
(without a URL only the in-process store is measured). Each store is filled with ``--entries``
answers spread over 8 scopes, with unit vectors of the encoder's size, then timed on exact hits,
semantic hits (a stored vector slightly perturbed) and misses, one lookup at a time (p50, p99) and
with 32 concurrent lookups (lookups per second). The store's own cost only: the encoder's time
(paid by both stores alike on the semantic layer) is timed apart. The PostgreSQL part runs in a
fresh database, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from router_model.encoder import EMBEDDING_DIM, SentenceEncoder  # noqa: E402
from service.gateway.levers.cache.response import ResponseCache  # noqa: E402
from service.gateway.levers.cache.store import CacheKey, CacheSettings  # noqa: E402

SCOPES = 8
CONCURRENCY = 32


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def unit_rows(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    v = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
    rows: NDArray[np.float32] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return rows


def keys(cache: ResponseCache, n: int, tag: str) -> list[CacheKey]:
    return [cache.key({"messages": [{"role": "user", "content": f"{tag} question {i}"}]},
                      f"tenant{i % SCOPES}", "weak") for i in range(n)]


async def fill(cache: ResponseCache, stored: list[CacheKey], vectors: NDArray[np.float32]) -> None:
    doc = {"object": "chat.completion", "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 400}}]}
    for start in range(0, len(stored), 500):
        for key, vector in zip(stored[start:start + 500], vectors[start:start + 500],
                               strict=True):
            key.vector = vector
            cache.store(key, doc, 0.001, "weak")
        await cache.backend.flush()


async def timed(calls: Sequence[Callable[[], Awaitable[Any]]]) -> tuple[float, float, int]:
    """p50 and p99 in ms of the calls one at a time, and how many found something."""
    times, found = [], 0
    for call in calls:
        t = time.perf_counter()
        found += await call() is not None
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), found


async def throughput(calls: Sequence[Callable[[], Awaitable[Any]]]) -> float:
    queue = list(calls)

    async def worker() -> None:
        while queue:
            await queue.pop()()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(calls) / (time.perf_counter() - t)


async def measure(name: str, settings: CacheSettings, entries: int, lookups: int) -> None:
    rng = np.random.default_rng(0)
    cache = ResponseCache(settings, encoder=None)
    await cache.start()
    try:
        stored = keys(cache, entries, "stored")
        vectors = unit_rows(rng, entries)
        t = time.perf_counter()
        await fill(cache, stored, vectors)
        fill_s = time.perf_counter() - t
        pick = rng.integers(0, entries, lookups)
        near = vectors[pick] + 0.01 * unit_rows(rng, lookups)
        near /= np.linalg.norm(near, axis=1, keepdims=True)
        misses = keys(cache, lookups, "missing")
        backend = cache.backend
        cases: dict[str, list[Callable[[], Awaitable[Any]]]] = {
            "exact hit": [lambda k=stored[i]: backend.exact(k) for i in pick],
            "semantic hit": [lambda k=stored[i], v=near[j]: backend.nearest(k, v)
                             for j, i in enumerate(pick)],
            "exact miss": [lambda k=k: backend.exact(k) for k in misses],
        }
        out(f"{name}: {entries} entries stored in {fill_s:.2f} s")
        for case, calls in cases.items():
            p50, p99, found = await timed(calls)
            rate = await throughput(calls)
            out(f"  {case:<13} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  found {found}/{lookups}  "
                f"{rate:9.0f} lookups/s at {CONCURRENCY} concurrent")
    finally:
        await cache.aclose()


def encoder_p50(lookups: int) -> float:
    encoder = SentenceEncoder.load()
    text = "user: Prove that there are infinitely many primes, then derive the theorem."
    times = []
    for _ in range(min(lookups, 200)):
        t = time.perf_counter()
        encoder.encode_ids([encoder.token_ids([text])[0]])
        times.append(time.perf_counter() - t)
    return float(np.percentile(np.asarray(times) * 1000, 50))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres-url", default=None, help="a server to create a database on")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true",
                        help="200 entries, 50 lookups (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.entries, args.lookups = min(args.entries, 200), min(args.lookups, 50)
    base = CacheSettings(similarity=0.95, max_entries=args.entries)
    asyncio.run(measure("in-process (MemoryCacheStore)", base, args.entries, args.lookups))
    if args.postgres_url:
        name = f"tierwise_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = urlsplit(args.postgres_url)._replace(path="/" + name).geturl()
        try:
            shared = CacheSettings(similarity=0.95, max_entries=args.entries, url=url,
                                   timeout_s=5.0, refresh_s=300.0)
            asyncio.run(measure("PostgreSQL (PostgresCacheStore)", shared, args.entries,
                                args.lookups))
        finally:
            with psycopg.connect(args.postgres_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    out(f"encoder (both stores, semantic layer only): p50 {encoder_p50(args.lookups):.2f} ms "
        "per chat embedded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
