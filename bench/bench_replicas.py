"""Two gateway replicas on one PostgreSQL, one killed with SIGKILL midway (issue 24's target).

Two ``tierwise gateway`` processes share a PostgreSQL traffic store (a fresh database on the
server at ``--postgres-url``, dropped at the end) and the fake upstream of ``bench_gateway``.
The client plays the load balancer (HAProxy's ``roundrobin`` with ``retry-on conn-failure`` and
``option redispatch``): request i goes to replica i % 2, and a request whose connection is
refused goes to the other replica. After ``--n`` / 2 answers, replica 2 gets SIGKILL; requests it
held in flight fail for the client (the balancer cannot know whether they were served), every
later request is served by replica 1. Then the store is read back:

- lost: an answered request (its ``x-tierwise-decision-id``) with no record;
- duplicated: a decision id recorded more than once;
- orphaned: a record of a request the client got no answer for (killed in flight), not an error.

    python bench/bench_replicas.py [--quick] [--n 10000] [--clients 16] [--postgres-url URL]

Prints a table and exits 1 when a record is lost or duplicated. Not a test (``--quick`` is run by
``tests/reliability/test_replicas.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import (  # noqa: E402
    REPO,
    Process,
    emit,
    run_gateway,
    start_upstream,
    two_tiers,
)

KEY = "bench-replicas-key"
MODEL = REPO / "data" / "models" / "routellm_fast"  # hand features: light replicas


@dataclass
class Outcome:
    """What the client (the balancer) saw."""

    answered: dict[str, int] = field(default_factory=dict)  # decision id -> replica
    failed: Counter[str] = field(default_factory=Counter)  # error kind -> count
    redispatched: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def fresh_database(base: str, stack: ExitStack) -> str:
    """A new database on the server at ``base``, dropped when ``stack`` closes; its URL."""
    name = f"tierwise_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    stack.callback(drop)
    return urlsplit(base)._replace(path="/" + name).geturl()


def start_replica(stack: ExitStack, upstream: str, traffic_url: str, workdir: Path,
                  name: str) -> tuple[str, Process]:
    """One gateway replica on a free port: its URL and process."""
    config = {"tiers": two_tiers(upstream), "router": {"bundle": str(MODEL)},
              "default_tier": "strong", "traffic": {"url": traffic_url}}
    return run_gateway(stack, dict(os.environ), config, workdir / f"{name}.yaml", KEY, name)


def run_load(urls: Sequence[str], victim: Process, n: int, clients: int) -> Outcome:
    """``n`` requests from ``clients`` threads, round robin with redispatch; SIGKILL ``victim``
    (replica 2) after ``n // 2`` answers."""
    out = Outcome()
    down: set[int] = set()
    local = threading.local()

    def client(replica: int) -> httpx.Client:
        pool: list[httpx.Client] | None = getattr(local, "clients", None)
        if pool is None:
            pool = local.clients = [
                httpx.Client(base_url=u, timeout=30, headers={"authorization": f"Bearer {KEY}"})
                for u in urls]
        return pool[replica]

    def one(i: int) -> None:
        body = {"model": "tierwise-auto", "messages": [
            {"role": "user", "content": f"Summarise the plot of a short story, number {i}."}]}
        replica = i % 2
        for attempt in range(2):
            if replica in down:
                replica = 1 - replica
            try:
                r = client(replica).post("/v1/chat/completions", json=body)
            except httpx.ConnectError:  # refused: never reached the replica, send it elsewhere
                with out.lock:
                    down.add(replica)
                    out.redispatched += 1
                if attempt == 0:
                    continue
                with out.lock:
                    out.failed["connect"] += 1
                return
            except httpx.HTTPError as exc:  # reset in flight: the balancer answers 502
                with out.lock:
                    out.failed[type(exc).__name__] += 1
                return
            with out.lock:
                if r.status_code == 200 and "x-tierwise-decision-id" in r.headers:
                    out.answered[r.headers["x-tierwise-decision-id"]] = replica
                    if len(out.answered) == n // 2 and victim.proc.poll() is None:
                        victim.proc.kill()
                else:
                    out.failed[f"http {r.status_code}"] += 1
            return

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(n)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="400 requests (the test's run)")
    parser.add_argument("--postgres-url", default=os.environ.get("TIERWISE_TEST_POSTGRES_URL"),
                        help="a PostgreSQL server to create the database on "
                             "(default: $TIERWISE_TEST_POSTGRES_URL)")
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error("no PostgreSQL server: pass --postgres-url or set "
                     "TIERWISE_TEST_POSTGRES_URL")
    n = 400 if args.quick else args.n
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        traffic_url = fresh_database(args.postgres_url, stack)
        upstream = start_upstream(stack, dict(os.environ))
        first, _ = start_replica(stack, upstream, traffic_url, Path(tmp), "gateway-1")
        second, victim = start_replica(stack, upstream, traffic_url, Path(tmp), "gateway-2")
        start = time.perf_counter()
        out = run_load((first, second), victim, n, args.clients)
        took = time.perf_counter() - start
        killed = victim.proc.wait(30)
        with psycopg.connect(traffic_url) as conn:
            rows = conn.execute("SELECT decision_id, count(*) FROM traffic "
                                "GROUP BY decision_id").fetchall()
    stored = {decision: count for decision, count in rows}
    lost = sum(1 for d in out.answered if d not in stored)
    duplicated = sum(1 for count in stored.values() if count > 1)
    orphaned = sum(1 for d in stored if d not in out.answered)
    by_replica = Counter(out.answered.values())
    emit(f"two gateway replicas on one PostgreSQL, {n} requests from {args.clients} clients, "
         f"replica 2 killed (exit {killed}) after {n // 2} answers, {took:.1f} s")
    emit("| answered | by replica 1 / 2 | failed in flight | redispatched | records | lost | "
         "duplicated | orphaned |")
    emit("|---|---|---|---|---|---|---|---|")
    failed = ", ".join(f"{k} {v}" for k, v in sorted(out.failed.items())) or "0"
    emit(f"| {len(out.answered)} | {by_replica[0]} / {by_replica[1]} | {failed} | "
         f"{out.redispatched} | {sum(stored.values())} | {lost} | {duplicated} | {orphaned} |")
    return 1 if lost or duplicated else 0


if __name__ == "__main__":
    raise SystemExit(main())
