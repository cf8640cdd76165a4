"""Bounded load on loopback: the router service (HTTP and gRPC) and the gateway, many clients.

Each target runs as its own process on 127.0.0.1 only: ``tierwise serve`` (shipped bundle) and
``tierwise gateway`` (routing in process, SQLite traffic store, fake OpenAI upstream from
``tests/fake_upstream.py``). For each target, ``--clients`` threads send real prompts from
``data/fixtures/*.jsonl`` in a loop bounded both in time (``--seconds``) and in count
(``--max-requests`` per client). Prints requests, errors, throughput, p50/p99 latency and the
server's RSS (VmRSS of /proc/<pid>/status) after a warm-up and after the load; exits 1 on any
error. Not a test.

    python bench/bench_load.py [--seconds 60] [--clients 32] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
from bench_gateway import (
    CLIENT_KEY,
    REPO,
    Process,
    emit,
    start_tierwise,
    start_upstream,
)

sys.path.insert(0, str(REPO))
from protos.tierwise.v1 import router_pb2 as pb  # noqa: E402
from protos.tierwise.v1 import router_pb2_grpc  # noqa: E402

WARMUP = 50


def fixture_prompts() -> list[str]:
    """Every prompt of the committed fixture files (real rows of the shipped data sources)."""
    texts: list[str] = []
    for path in sorted((REPO / "data" / "fixtures").glob("*.jsonl")):
        texts += [str(json.loads(line)["prompt"]) for line in path.read_text("utf-8").splitlines()]
    return texts


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is not None:
                self.errors[error] = self.errors.get(error, 0) + 1
            elif seconds is not None:
                self.latencies.append(seconds)


def run_load(call: Callable[[str], None], texts: list[str], clients: int, seconds: float,
             max_requests: int) -> tuple[Result, float]:
    """``clients`` threads calling ``call(prompt)`` until ``seconds`` pass or each sent
    ``max_requests``; returns the result and the wall time."""
    result = Result()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        for i in range(max_requests):
            if time.monotonic() >= deadline:
                return
            text = texts[(k * 7919 + i) % len(texts)]
            start = time.perf_counter()
            try:
                call(text)
            except Exception as exc:  # a bench counts every failure kind, and goes on
                result.add(None, type(exc).__name__ + ": " + str(exc)[:80])
            else:
                result.add(time.perf_counter() - start)

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result, time.monotonic() - start


def http_call(client: httpx.Client, path: str, body: Callable[[str], dict[str, object]],
              headers: dict[str, str]) -> Callable[[str], None]:
    def call(text: str) -> None:
        response = client.post(path, json=body(text), headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}")
    return call


def grpc_call(stub: router_pb2_grpc.RouterStub) -> Callable[[str], None]:
    def call(text: str) -> None:
        stub.Route(pb.RouteRequest(prompt=text), timeout=30)
    return call


def measure(name: str, pid: int, call: Callable[[str], None], texts: list[str],
            args: argparse.Namespace) -> bool:
    """Warm up, then load one target; prints its row; returns whether it had no error."""
    for text in texts[:WARMUP]:
        call(text)
    before = rss_kib(pid)
    result, wall = run_load(call, texts, args.clients, args.seconds, args.max_requests)
    after = rss_kib(pid)
    ms = np.array(result.latencies) * 1000.0
    n, errors = len(ms), sum(result.errors.values())
    p50, p99 = (np.percentile(ms, 50), np.percentile(ms, 99)) if n else (float("nan"),) * 2
    emit(f"{name:<34} {n + errors:>7} {errors:>6} {n / wall:>8.1f} {p50:>8.2f} {p99:>8.2f} "
         f"{before / 1024:>8.1f} {after / 1024:>8.1f} {100.0 * (after - before) / before:>+6.1f}%")
    for kind, count in result.errors.items():
        emit(f"    error x{count}: {kind}")
    return errors == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="load time per target")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per client and target")
    parser.add_argument("--model", type=Path, default=REPO / "data" / "models" / "routellm_fast")
    parser.add_argument("--quick", action="store_true",
                        help="2 clients, 1 s, 20 requests each per target (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.max_requests = 2, 1.0, 20
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    texts = fixture_prompts()
    emit(f"bench_load: {args.clients} clients x {args.seconds:.0f} s (<= {args.max_requests} "
         f"requests each) per target, {len(texts)} fixture prompts, bundle {args.model.name}, "
         f"{os.cpu_count()} CPUs, 127.0.0.1 only")
    emit(f"{'target':<34} {'requests':>7} {'errors':>6} {'req/s':>8} {'p50 ms':>8} "
         f"{'p99 ms':>8} {'RSS0 MiB':>8} {'RSS1 MiB':>8} {'dRSS':>7}")
    ok = True
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        router = Process([sys.executable, "-m", "cli.main", "serve", "--model",
                          str(args.model), "--http-port", "0", "--grpc-port", "0"],
                         env, "tierwise serve")
        stack.callback(router.stop)
        http_port = router.wait_for(r"http listening on [\d.]+:(\d+)").group(1)
        grpc_port = router.wait_for(r"grpc listening on [\d.]+:(\d+)").group(1)
        limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
        client = stack.enter_context(httpx.Client(timeout=30, limits=limits))
        route = http_call(client, f"http://127.0.0.1:{http_port}/v1/route",
                          lambda t: {"prompt": t}, {})
        ok &= measure("router HTTP POST /v1/route", router.proc.pid, route, texts, args)
        channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        stub = router_pb2_grpc.RouterStub(channel)
        ok &= measure("router gRPC Route", router.proc.pid, grpc_call(stub), texts, args)
        router.stop()
        upstream = start_upstream(stack, env)
        gateway_url = start_tierwise(stack, env, upstream, args.model, Path(tmp))
        gateway_pid = _pid_listening(gateway_url)  # start_tierwise returns only the URL
        chat = http_call(client, gateway_url + "/v1/chat/completions", lambda t: {
            "model": "tierwise-auto", "messages": [{"role": "user", "content": t}]},
            {"authorization": f"Bearer {CLIENT_KEY}"})
        ok &= measure("gateway tierwise-auto (SQLite)", gateway_pid, chat, texts, args)
    emit("result: " + ("no errors" if ok else "ERRORS (see above)"))
    return 0 if ok else 1


def _pid_listening(url: str) -> int:
    """The pid of the process that listens on the URL's port (from /proc/net/tcp and fds)."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port and cols[3] == "0A":  # LISTEN
            inodes.add(cols[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on {url}")


if __name__ == "__main__":
    raise SystemExit(main())
