"""Router latency and throughput on real MMLU prompts: floor, in-process, HTTP, gRPC, concurrency.

Prints a table; not a test. ``python bench/bench_router.py [--model DIR] [--fast-model DIR]``.
Every figure is measured in this run on this machine: compare them with each other, not with
another run (shared machines vary up to 3x between runs).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from itertools import cycle
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grpc_wire_client import GrpcWireClient  # noqa: E402
from router_throughput import (  # noqa: E402
    encoder_batch_throughput,
    grpc_throughput,
    in_process_throughput,
    lean_grpc_throughput,
)
from serve_process import Server, serving  # noqa: E402
from wire_client import Http1Client  # noqa: E402

from protos.tierwise.v1 import router_pb2 as pb  # noqa: E402
from protos.tierwise.v1 import router_pb2_grpc  # noqa: E402
from router_model.encoder import MAX_TOKENS, truncate_ids, word_piece_ids  # noqa: E402
from router_model.features import featurize, hand_features  # noqa: E402
from router_model.logs import configure_logging  # noqa: E402
from router_model.router import ComplexityRouter  # noqa: E402
from router_model.settings import DATA_DIR, ServiceSettings  # noqa: E402
from service.router.core import RouteInput, RouteService, load_router  # noqa: E402

logger = logging.getLogger("bench")
ROWS: list[tuple[str, str, str]] = []


def emit(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, value, note))
    sys.stdout.write(f"  {name:<52} {value:>18}  {note}\n")
    sys.stdout.flush()


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """Seconds per call of ``fn`` over ``n`` calls, after 5 warm-up calls."""
    for _ in range(5):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def us(x: float) -> str:
    return f"{x * 1e6:,.0f} us" if x < 1e-3 else f"{x * 1e3:,.2f} ms"


# -- real prompts ---------------------------------------------------------------------------------


def mmlu_prompts() -> list[str]:
    out = []
    for path in sorted((DATA_DIR / "sources" / "routellm" / "mmlu").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            out += [row["prompt"] for row in csv.DictReader(f)]
    return out


def prompt_sets(tokenizer: Any, per_set: int = 40) -> dict[int, list[str]]:
    """Real MMLU prompts near 20 and 200 tokens; consecutive prompts joined to reach 2,000."""
    prompts = mmlu_prompts()
    counts = [len(ids) for ids in word_piece_ids(tokenizer, prompts)]
    sets: dict[int, list[str]] = {}
    for target in (20, 200):
        near = sorted(range(len(prompts)), key=lambda i: abs(counts[i] - target))[:per_set]
        sets[target] = [prompts[i] for i in near]
    long, parts, total = [], [], 0
    for prompt, count in zip(prompts, counts, strict=True):
        parts.append(prompt)
        total += count
        if total >= 2000:
            long.append("\n\n".join(parts))
            parts, total = [], 0
            if len(long) == per_set // 2:
                break
    sets[2000] = long
    return sets


# -- the floor: bare onnxruntime ----------------------------------------------------------------


def floor_fn(router: ComplexityRouter, prompts: list[str]) -> Callable[[int], None]:
    """Encoder session + classifier session only, on pre-tokenised, pre-featurised inputs."""
    encoder = router.featurizer.encoder
    assert encoder is not None, "the floor needs a full-feature bundle"
    tok = encoder.tokenizer
    feeds = []
    for ids in word_piece_ids(tok, prompts):
        seq = np.array([[tok.cls_token_id, *truncate_ids(ids), tok.sep_token_id]], dtype=np.int64)
        mask = np.ones_like(seq)
        feeds.append({"input_ids": seq, "attention_mask": mask, "token_type_ids": 0 * mask})
    rows = [featurize([p], router.featurizer).matrix for p in prompts]

    def one(k: int) -> None:
        encoder.session.run(None, feeds[k % len(prompts)])
        router.session.run(["probabilities"], {"features": rows[k % len(prompts)]})

    return one


# -- in process -----------------------------------------------------------------------------------


def paired_s(
    service: RouteService, prompts: list[str], n: int, baseline: Callable[[int], None]
) -> tuple[list[float], list[float]]:
    """Seconds of ``baseline(k)`` and of ``RouteService.route`` on the same prompt, interleaved
    so that both see the same machine load (on shared cores it drifts more than the difference).
    """

    async def run() -> tuple[list[float], list[float]]:
        base, served = [], []
        for k in range(n + 5):
            t0 = time.perf_counter()
            baseline(k)
            t1 = time.perf_counter()
            await service.route(RouteInput(prompt=prompts[k % len(prompts)]), transport="bench")
            base.append(t1 - t0)
            served.append(time.perf_counter() - t1)
        return base[5:], served[5:]

    return asyncio.run(run())


# -- over loopback --------------------------------------------------------------------------------


Samples = tuple[list[float], list[float], list[float]]


def transport_s(server: Server, prompts: list[str], n: int) -> dict[str, Samples]:
    """Round trips, their part outside the core (round trip minus the core's latency_ms), and
    the round trip of the transport's health check (client, framework and loopback alone),
    interleaved with the routes so that both see the same machine load. Each transport is
    measured with a lean client that writes the wire bytes itself (``bench/wire_client.py``,
    ``bench/grpc_wire_client.py``: the server's share) and with the usual Python client (httpx,
    grpcio: what a typical Python caller adds on top). The lean gRPC client's decision is checked
    against grpcio's before timing.
    """
    out: dict[str, Samples] = {}
    health_request = health_pb2.HealthCheckRequest().SerializeToString()

    def lean_route(p: str) -> float:
        status, body = lean.post_json("/v1/route", {"prompt": p})
        assert status == 200, body
        return float(json.loads(body)["latency_ms"])

    def lean_grpc_route(p: str) -> pb.RouteResponse:
        request = pb.RouteRequest(prompt=p).SerializeToString()
        return pb.RouteResponse.FromString(lean_grpc.call("/tierwise.v1.Router/Route", request))

    def lean_grpc_health() -> None:
        answer = lean_grpc.call("/grpc.health.v1.Health/Check", health_request)
        status = health_pb2.HealthCheckResponse.FromString(answer).status
        assert status == health_pb2.HealthCheckResponse.SERVING, answer

    with httpx.Client(base_url=server.http, timeout=30) as http, Http1Client(server.http) as lean, \
            grpc.insecure_channel(server.grpc) as channel, GrpcWireClient(server.grpc) as lean_grpc:
        stub, health = router_pb2_grpc.RouterStub(channel), health_pb2_grpc.HealthStub(channel)
        for p in prompts[:5]:
            mine, theirs = lean_grpc_route(p), stub.Route(pb.RouteRequest(prompt=p), timeout=30)
            assert mine.tier == theirs.tier, (mine, theirs)
            assert dict(mine.probabilities) == dict(theirs.probabilities), (mine, theirs)
        calls: dict[str, tuple[Callable[[str], float], Callable[[], object]]] = {
            "http": (lean_route, lambda: lean.get("/healthz")),
            "http (httpx client)": (
                lambda p: http.post("/v1/route", json={"prompt": p}).json()["latency_ms"],
                lambda: http.get("/healthz")),
            "grpc": (lambda p: lean_grpc_route(p).latency_ms, lean_grpc_health),
            "grpc (grpcio client)": (
                lambda p: stub.Route(pb.RouteRequest(prompt=p), timeout=30).latency_ms,
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=30)),
        }
        for name, (route, check) in calls.items():
            rtt, added, floor = [], [], []
            for k in range(n + 5):
                t = time.perf_counter()
                latency_ms = route(prompts[k % len(prompts)])
                rtt.append(time.perf_counter() - t)
                added.append(rtt[-1] - latency_ms / 1000)
                t = time.perf_counter()
                check()
                floor.append(time.perf_counter() - t)
            out[name] = (rtt[5:], added[5:], floor[5:])
    return out


# -- the run --------------------------------------------------------------------------------------


def latency_section(
    service: RouteService, router: ComplexityRouter, sets: dict[int, list[str]], n: int
) -> None:
    for size, prompts in sets.items():
        count = max(n // (10 if size == 2000 else 1), min(n, 30))  # --quick: n of 5
        floor, inproc = paired_s(service, prompts, count, floor_fn(router, prompts))
        hand = timed(lambda p=prompts[0], s=size: hand_features(p, s), max(count // 5, 10))
        ratio = pct(inproc, 50) / pct(floor, 50)
        emit(f"{size:>5}-token floor p50 (encoder+classifier ORT)", us(pct(floor, 50)))
        emit(f"{size:>5}-token in-process p50 / p99", f"{us(pct(inproc, 50))} / "
             f"{us(pct(inproc, 99))}", f"{ratio:.2f}x floor (target <= 1.5x)")
        emit(f"{size:>5}-token   of which hand features p50", us(pct(hand, 50)),
             "byte counts and sieved regex scans of the whole prompt")


def fast_section(fast: Path, prompts: list[str], n: int, rounds: int = 5) -> None:
    """The fast bundle in process: best of ``rounds`` interleaved rounds (shared cores drift)."""
    service = RouteService.from_path(ServiceSettings(), fast)
    router = ComplexityRouter.from_artifact(fast)
    cyc, rows = cycle(prompts), cycle(featurize(prompts, router.featurizer).matrix[:, None])
    runs = [paired_s(service, prompts, n * 3, lambda k: router.route(prompts[k % len(prompts)]))
            for _ in range(rounds)]
    feats = [timed(lambda: featurize([next(cyc)], router.featurizer), n) for _ in range(rounds)]
    onnx = [timed(lambda: router.proba_from_features(next(rows)), n) for _ in range(rounds)]
    raw, served, feat, clf = (min(r, key=lambda x: pct(x, 50)) for r in (
        [r[0] for r in runs], [r[1] for r in runs], feats, onnx))
    emit("   20-token fast bundle in-process p50 / p99", f"{us(pct(served, 50))} / "
         f"{us(pct(served, 99))}", f"best of {rounds} rounds (target p50 < 100 us)")
    emit("   20-token fast bundle ComplexityRouter.route p50", us(pct(raw, 50)), "no service")
    emit("   20-token   of which featurize / classifier p50", f"{us(pct(feat, 50))} / "
         f"{us(pct(clf, 50))}", "each alone, prompts cycled")
    quiet, logged = decision_log_s(service, prompts, n)
    emit("   20-token fast bundle in-process p50, log off / on", f"{us(pct(quiet, 50))} / "
         f"{us(pct(logged, 50))}", "requests 0.5 ms apart (idle cores cool), JSON at INFO")


def decision_log_s(
    service: RouteService, prompts: list[str], n: int
) -> tuple[list[float], list[float]]:
    """Service timings with requests 0.5 ms apart (the listener writes in between), decision
    log off then on (JSON at INFO, as served): each is compared with the other, not with the
    back-to-back figures, since a core that idles between requests runs the next one slower."""
    sleep = lambda k: time.sleep(0.0005)  # noqa: E731
    quiet = paired_s(service, prompts, n * 3, sleep)[1]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with tempfile.TemporaryFile("w") as sink:
        configure_logging("json", "INFO", stream=sink)
        try:
            return quiet, paired_s(service, prompts, n * 3, sleep)[1]
        finally:
            root.handlers[0].close()
            root.handlers[:] = handlers
            root.setLevel(level)  # setLevel, not .level: loggers cache their enabled levels


def transport_section(server: Server, prompts: list[str], n: int, label: str = "") -> None:
    for name, (rtt, added, floor) in transport_s(server, prompts, n).items():
        emit(f"   20-token {label}{name} round trip p50 / p99", f"{us(pct(rtt, 50))} / "
             f"{us(pct(rtt, 99))}")
        emit(f"   20-token {label}{name} added over in-process p50", us(pct(added, 50)),
             "round trip - the core's latency_ms, per request" + (
                 "" if "client)" in name else " (target <= 1 ms)"))
        emit(f"            {label}{name} health check round trip p50", us(pct(floor, 50)),
             "the floor: client, framework and loopback, no routing")


def throughput_section(service: RouteService, router: ComplexityRouter, server: Server,
                       prompts: list[str], clients: int, seconds: float) -> None:
    # the encoder alone, the service in process and the service over gRPC alternate, twice
    # each, so that all see the same drift in machine load; the figures are the means over both
    # rounds
    raw_rates, rates, wire_rates, errors, wire_errors = [], [], [], 0, 0
    for _ in range(2):
        raw_rates.append(encoder_batch_throughput(router, prompts, clients, seconds / 2))
        rate, errs = in_process_throughput(service, prompts, clients, seconds / 2)
        rates.append(rate)
        errors += errs
        rate, errs = lean_grpc_throughput(server, prompts, clients, seconds / 2)
        wire_rates.append(rate)
        wire_errors += errs
    raw = float(np.mean(raw_rates))
    rounds = " / ".join(f"{r:.1f}" for r in raw_rates)
    emit(f"  200-token encoder alone, batches of {clients}", f"{raw:,.1f} /s",
         f"the ceiling ({rounds} per round)")
    for name, got, errs in (("in-process", rates, errors), ("gRPC (lean clients)", wire_rates,
                                                            wire_errors)):
        rate, rounds = float(np.mean(got)), " / ".join(f"{r:.1f}" for r in got)
        emit(f"  200-token {name}, {clients} concurrent, {seconds:.0f} s", f"{rate:,.1f} /s",
             f"{rate / raw:.0%} of encoder (target >= 80%), {errs} errors ({rounds} per round)")
    rate, errs = grpc_throughput(server, prompts, clients, seconds)
    emit(f"  200-token gRPC (grpcio aio clients), {clients} concurrent, {seconds:.0f} s",
         f"{rate:,.1f} /s", f"{rate / raw:.0%} of encoder, {errs} errors (clients share the cores)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement once and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DATA_DIR / "models" / "routellm")
    parser.add_argument("--fast-model", type=Path, default=DATA_DIR / "models" / "routellm_fast")
    parser.add_argument("-n", type=int, default=200, help="samples per latency figure")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true",
                        help="5 samples per figure, 2 clients for 1 s (a smoke run, no figures)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.clients, args.seconds = 5, 2, 1.0
    logging.basicConfig(level=logging.WARNING)
    router = load_router(args.model)
    service = RouteService(ServiceSettings(), router)
    sets = prompt_sets(router.featurizer.tokenizer)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    sys.stdout.write(f"tierwise router bench: {router.model_version} (encoder truncates to "
                     f"{MAX_TOKENS} tokens), {os.cpu_count()} CPUs, load average {load}\n")
    latency_section(service, router, sets, args.n)
    fast_section(args.fast_model, sets[20], args.n)
    logs = Path(tempfile.mkdtemp(prefix="tierwise-bench-"))
    with serving(args.fast_model, logs / "serve-fast.log") as server:
        transport_section(server, sets[20], args.n, "fast bundle ")
    with serving(args.model, logs / "serve.log") as server:
        transport_section(server, sets[20], args.n)
        throughput_section(service, router, server, sets[200], args.clients, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
