"""The gateway under abuse (issue 21): idle connections, a big-body tenant, a rate-limited key.

``tierwise gateway`` (hand-feature bundle, SQLite traffic) and the fake upstream run as their
own processes on loopback (``bench_gateway``'s helpers). Three figures, each against a baseline
taken in the same run:

1. a good client's p99 alone, then while ``--idle`` connections sit open (half of them having
   sent half a request; held by child processes of 5,000 each), and how many the server closed:
   past its connection cap (2,048) the longest-waiting, the rest by its header timeout (2 s);
2. another key's p99 alone, then while one key sends ``--big`` concurrent 3.9 MB prompts (each
   refused 413 before any heavy work), and the gateway's RSS before, at the end and after;
3. the latency of a 429 for a key at its requests-per-minute limit, and the other keys' p50
   before and while that key is refused.

    python bench/bench_abuse.py [--quick] [--idle 5000] [--big 32] [--n 200]

Prints a table; not a test (``--quick`` is run by ``tests/integration/test_bench_abuse.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import REPO, emit, run_gateway, start_upstream, two_tiers  # noqa: E402

#: idle phase's client; big-body key and the other key; rate-limited key and the other key
KEYS = ("bench-idle", "bench-big", "bench-other", "bench-limited", "bench-other-2")
CHAT = {"model": "weak", "messages": [{"role": "user", "content": "hi"}]}
BIG = (b'{"model": "tierwise-auto", "messages": [{"role": "user", "content": "'
       + b"word " * 780_000 + b'"}]}')


def start_gateway(
    stack: ExitStack, upstream: str, workdir: Path, rpm: int
) -> tuple[str, int]:
    """The gateway with a per-key RPM limit and a 2 s header timeout; its URL and pid."""
    config = {
        "tiers": two_tiers(upstream),
        "default_tier": "strong",
        "traffic": {"url": f"sqlite:///{workdir / 'abuse-traffic.db'}"},
        "limits": {"requests_per_minute": rpm},
    }
    env = {"TIERWISE_GATEWAY__SERVER__HEADER_TIMEOUT_S": "2", "PATH": "/usr/bin:/bin"}
    url, proc = run_gateway(stack, env, config, workdir / "abuse-gateway.yaml", ",".join(KEYS))
    return url, proc.proc.pid


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latencies(url: str, key: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"},
                      timeout=30) as http:
        for _ in range(n):
            t = time.perf_counter()
            r = http.post("/v1/chat/completions", json=CHAT)
            out.append((time.perf_counter() - t) * 1000)
            if r.status_code not in (200, 429):
                raise RuntimeError(f"unexpected status {r.status_code}: {r.text[:200]}")
    return out


def p(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def hold_connections(port: int, n: int) -> None:
    """Child mode: open ``n`` connections (every other one half a request), say "ready", wait
    for stdin to close, then print how many the server had closed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 256)), hard))
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: 1")
        socks.append(s)
    emit("ready")
    sys.stdin.read()
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        readable = {key.fileobj for key, _ in sel.select(timeout=1)}
    closed = 0
    for s in socks:
        if s in readable:
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        s.close()
    emit(f"closed {closed}")


def idle_connections(url: str, n_idle: int, n: int) -> None:
    """A good client's p99 alone and while ``n_idle`` connections are held open by child
    processes of at most 5,000 each (a process's descriptor limit here is 20,000)."""
    port = int(url.rsplit(":", 1)[1])
    base = latencies(url, KEYS[0], n)
    sizes = [min(5000, n_idle - i) for i in range(0, n_idle, 5000)]
    holders = [subprocess.Popen([sys.executable, __file__, "--hold", str(port), str(k)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for k in sizes]
    for h in holders:
        assert h.stdout is not None and h.stdout.readline().strip() == "ready"
    during = latencies(url, KEYS[0], n)
    time.sleep(2.5)  # past the 2 s header timeout
    closed = sum(int(h.communicate("")[0].split()[-1]) for h in holders)
    emit(f"| idle connections ({n_idle}, half slowloris) | good client p99 | {p(base, 99):.1f} ms"
         f" | {p(during, 99):.1f} ms ({p(during, 99) / p(base, 99):.2f}x); {closed}/{n_idle} "
         "closed by the server (past the connection cap: the longest waiting; then the 2 s "
         "header timeout) |")


async def _big_burst(url: str, n_big: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        head = {"authorization": f"Bearer {KEYS[1]}", "content-type": "application/json"}
        sent = [http.post("/v1/chat/completions", content=BIG, headers=head)
                for _ in range(n_big)]
        return [r.status_code for r in await asyncio.gather(*sent)]


def big_burst(url: str, n_big: int) -> None:
    """Child mode: say "ready", send ``n_big`` concurrent big prompts, print their statuses."""
    emit("ready")
    emit(" ".join(map(str, asyncio.run(_big_burst(url, n_big)))))


def big_bodies(url: str, pid: int, n_big: int, n: int) -> None:
    base = latencies(url, KEYS[2], n)
    before = rss_mb(pid)
    # the big uploads come from their own process, as another tenant's would: sent from a
    # thread of this one, they would hold its GIL while the other key's requests are timed
    burst = subprocess.Popen([sys.executable, __file__, "--burst", url, str(n_big)],
                             stdout=subprocess.PIPE, text=True)
    assert burst.stdout is not None and burst.stdout.readline().strip() == "ready"
    during: list[float] = []
    while burst.poll() is None or len(during) < n:
        during.extend(latencies(url, KEYS[2], 1))
    statuses = burst.communicate()[0].split()
    end = rss_mb(pid)
    time.sleep(2)
    after = rss_mb(pid)
    refused = statuses.count("413")
    emit(f"| {n_big} concurrent 3.9 MB prompts, one key | other key p99 | {p(base, 99):.1f} ms |"
         f" {p(during, 99):.1f} ms ({p(during, 99) / p(base, 99):.2f}x); {refused}/{n_big} "
         f"refused 413; RSS {before:.0f} -> {end:.0f} -> {after:.0f} MB (2 s later) |")


def rate_limited(url: str, n: int, rpm: int) -> None:
    # the windows are minutes: start where this phase (about 10 ms a request) ends in the same one
    if time.time() % 60 > 58 - (3 * n + rpm) * 0.01:
        time.sleep(61 - time.time() % 60)
    base = latencies(url, KEYS[4], n)
    latencies(url, KEYS[3], rpm)  # the key reaches its limit
    refused = latencies(url, KEYS[3], n)
    during = latencies(url, KEYS[4], n)
    emit(f"| key at its {rpm} RPM limit | 429 p50 / p99 | other key p50 {p(base, 50):.1f} ms |"
         f" 429 in {p(refused, 50):.2f} / {p(refused, 99):.2f} ms; other key p50 "
         f"{p(during, 50):.1f} ms while refused |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts (for the test)")
    parser.add_argument("--hold", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--burst", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--big", type=int, default=32)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args(argv)
    if args.hold:
        hold_connections(*args.hold)
        return 0
    if args.burst:
        big_burst(args.burst[0], int(args.burst[1]))
        return 0
    idle, big, n = (100, 2, 10) if args.quick else (args.idle, args.big, args.n)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        upstream = start_upstream(stack, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
        rpm = 4 * n + 10  # no key but the limited one reaches it
        url, pid = start_gateway(stack, upstream, Path(tmp), rpm)
        emit("| scenario | measured | baseline | under abuse |")
        emit("|---|---|---|---|")
        idle_connections(url, idle, n)
        big_bodies(url, pid, big, n)
        rate_limited(url, n, rpm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
