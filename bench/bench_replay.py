"""The whole retrain + A/B loop at scale, on real outcome data: replay, A/B report, retrain gate.

Every server is its own process on loopback: the fake OpenAI upstream (``tests/fake_upstream.py``,
chat completions on the real wire protocol) and ``tierwise gateway`` (the bundle in process, an A/B
split of ``tierwise-auto`` between the router and the fixed arms, traffic in SQLite in a temp dir,
no prompt text kept). The labeled file's rows are split by group, seeded: a frozen evaluation set
(20% of the groups), ``--n`` rows to replay, and the rest as base training data. The champion is
``--model``'s recipe (tiers, feature set, estimator) trained by ``tierwise train`` on the base rows
only: a shipped bundle was fit on every row, the frozen ones too, and would be graded in-sample
against an out-of-sample challenger. ``training.replay``
sends the replayed rows through the gateway and posts, as feedback, the recorded score of the model
that answered (RouteLLM's real per-model correctness). Then ``tierwise ab-report`` and ``tierwise
retrain`` (the champion registered in a temp MLflow SQLite registry; the challenger trained from
the stored features alone) run as the commands they are. Prints the A/B verdict, the gate's result
and each step's time; not a test.

    python bench/bench_replay.py [--model data/models/routellm_fast] [--n 3000] [--workers 4]
    python bench/bench_replay.py --quick     # the fixture's 120 rows, 60 replayed: seconds

The champion is registered as ``<bundle>_replay``: ``tierwise train`` refuses a shipped bundle's
name.

The labeled files come from ``data/sources`` (``tierwise convert``; converted here when missing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_gateway import emit, run_gateway, start_upstream  # noqa: E402

from router_model.artifact import read_bundle  # noqa: E402
from router_model.settings import Settings  # noqa: E402
from training import registry  # noqa: E402
from training.data import LabeledRow, group_split, read_labeled, write_labeled  # noqa: E402
from training.replay import ReplayResult, replay  # noqa: E402
from training.sources import ensure_converted  # noqa: E402

CLIENT_KEY = "bench-client"
ARMS = [{"name": "router", "weight": 0.5},
        {"name": "always_weak", "tier": "weak", "weight": 0.25},
        {"name": "always_strong", "tier": "strong", "weight": 0.25}]
logger = logging.getLogger("bench_replay")
QUICK_DATA = REPO / "data" / "fixtures" / "routellm_small.jsonl"


def split_rows(rows: list[LabeledRow], n: int, seed: int) -> tuple[list[LabeledRow], ...]:
    """(replayed, base, frozen eval): eval is 20% of the groups, replayed and base the rest."""
    train_idx, eval_idx = group_split(rows, test_fraction=0.2, seed=seed)
    order = np.random.default_rng(seed).permutation(np.asarray(train_idx))
    replayed = [rows[i] for i in order[:n]]
    base = [rows[i] for i in order[n:]]
    return replayed, base, [rows[i] for i in eval_idx]


def train_champion(reference: Path, base: Path, tmp: Path, env: dict[str, str],
                   seed: int) -> Path:
    """``reference``'s recipe trained by ``tierwise train`` on ``base`` only; the bundle path.

    The bundle is named ``<reference>_replay``: a shipped bundle's own name is refused.
    """
    manifest = read_bundle(reference)[0]
    name = f"{manifest.name}_replay"
    tiers = tmp / "tiers.yaml"
    tiers.write_text(yaml.safe_dump({"tiers": [
        {"name": t.name, "model": t.model, "input_price": t.input_price,
         "output_price": t.output_price} for t in manifest.tiers]}), encoding="utf-8")
    tierwise(["train", "--data", str(base), "--tiers", str(tiers), "--name", name,
              "--feature-set", manifest.feature_set, "--estimator", manifest.estimator,
              "--tolerance", str(manifest.label_rule.tolerance), "--models-dir",
              str(tmp / "models"), "--reports-dir", str(tmp / "reports"), "--no-register",
              "--no-cache", "--seed", str(seed)], env)
    return tmp / "models" / name


def start_gateway(stack: ExitStack, env: dict[str, str], upstream: str, model: Path,
                  workdir: Path) -> tuple[str, str]:
    """``tierwise gateway`` with the A/B split on a free port; (base URL, traffic store URL)."""
    manifest = read_bundle(model)[0]
    tiers = [{"name": t.name, "model": t.model, "input_price": t.input_price,
              "output_price": t.output_price, "base_url": upstream,
              "api_key_env": "BENCH_UPSTREAM_KEY", "timeout_s": 30} for t in manifest.tiers]
    db = f"sqlite:///{workdir / 'traffic.db'}"
    config = {"tiers": tiers, "router": {"bundle": str(model)}, "default_tier": tiers[-1]["name"],
              "traffic": {"url": db, "store_prompts": False},
              "ab": {"salt": "bench", "arms": ARMS}}
    return run_gateway(stack, env, config, workdir / "gateway.yaml", name="gateway")[0], db


def replay_all(url: str, rows: Sequence[LabeledRow], workers: int) -> ReplayResult:
    """``training.replay.replay`` over ``workers`` client threads (rows dealt round-robin)."""
    results: list[ReplayResult] = []
    lock = threading.Lock()

    def work(part: Sequence[LabeledRow]) -> None:
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            result = replay(part, client, user_prefix="bench")
        with lock:
            results.append(result)

    threads = [threading.Thread(target=work, args=(rows[i::workers],)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tiers: Counter[str] = Counter()
    arms: Counter[str] = Counter()
    for r in results:
        tiers.update(r.by_tier)
        arms.update(r.by_arm)
    return ReplayResult(sum(r.sent for r in results), sum(r.answered for r in results),
                        sum(r.feedback for r in results), sum(r.failed for r in results),
                        dict(tiers), dict(arms))


def tierwise(args: Sequence[str], env: dict[str, str]) -> float:
    """Run one ``tierwise`` command to completion; its wall time in seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"tierwise {args[0]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return elapsed


def print_ab(report: dict[str, Any]) -> None:
    emit(f"  {'arm':<15} {'requests':>8} {'labeled':>8} {'USD/request':>12} {'quality':>8} "
         "tier mix")
    for arm, a in report["arms"].items():
        mix = ", ".join(f"{t} {v:.0%}" for t, v in a["tier_mix"].items())
        # an arm below ab-report's --min-labeled has no quality: "not enough data"
        quality = "n/a" if a["quality"] is None else f"{a['quality']:.3f}"
        emit(f"  {arm:<15} {a['requests']:8d} {a['labeled']:8d} "
             f"{a['cost_per_request_usd']:12.6f} {quality:>8} {mix}")
    for arm, c in report["comparisons"].items():
        emit(f"  verdict vs {arm}: {c['verdict']}")


def print_gate(decision: dict[str, Any]) -> None:
    data = decision["data"]
    emit(f"  data: {data['traffic_labeled']} labeled traffic prompts ({data['traffic_train']} "
         f"train, {data['traffic_holdout']} holdout, skipped {data['traffic_skipped']}), "
         f"{data['base_rows']} base rows, {data['frozen_rows']} frozen rows")
    for who in ("champion", "challenger"):
        c = decision["cards"][who]
        parts = [f"{k} gate {c[k]['gate']:.4f} (n={c[k]['n']})" for k in ("frozen", "traffic")
                 if c.get(k) and c[k]["gate"] is not None]
        emit(f"  {who:<10} {'; '.join(parts)}; {c['latency_us_per_row']:.1f} us/row")
    for reason in decision["reasons"]:
        emit(f"  gate {reason}")
    verdict = "PROMOTED" if decision["promoted"] else "kept the champion"
    emit(f"  result: {verdict} (challenger version {decision['challenger_version']}, margin "
         f"{decision['margin']}, max slowdown {decision['max_slowdown']}x)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=REPO / "data" / "models" / "routellm_fast")
    parser.add_argument("--data", type=Path, nargs="+", default=None,
                        help="labeled files (default: the RouteLLM files, converted if missing)")
    parser.add_argument("--n", type=int, default=3000, help="rows to replay")
    parser.add_argument("--workers", type=int, default=4, help="concurrent replay clients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="the 120-row fixture, 60 rows replayed by 2 clients (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.data = args.data or [QUICK_DATA]
        args.n, args.workers = min(args.n, 60), min(args.workers, 2)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    settings = Settings()
    if args.data is None:
        converted = ensure_converted(settings.training.sources_dir, settings.training.labeled_dir)
        args.data = [converted[n] for n in ("routellm_mmlu", "routellm_gsm8k") if n in converted]
    rows = [r for path in args.data for r in read_labeled(path)]
    replayed, base, frozen = split_rows(rows, args.n, args.seed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    quiet = {**env, "TIERWISE_LOG_LEVEL": "WARNING"}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_labeled(base, tmp / "base.jsonl")
        write_labeled(frozen, tmp / "eval.jsonl")
        emit(f"bench_replay: recipe of {args.model.name}, {len(rows)} labeled rows "
             f"({', '.join(p.name for p in args.data)}): {len(replayed)} replayed, "
             f"{len(base)} base, {len(frozen)} frozen eval; {os.cpu_count()} CPUs")
        start = time.perf_counter()
        champion = train_champion(args.model, tmp / "base.jsonl", tmp, quiet, args.seed)
        cm = read_bundle(champion)[0]
        name = cm.name
        emit(f"champion: {cm.estimator} on the base rows, trained in "
             f"{time.perf_counter() - start:.1f}s ({cm.model_version})")
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        registry.log_and_register(uri, name=name, bundle_dir=champion, params={}, metrics={},
                                  alias=registry.CHAMPION)
        upstream = start_upstream(stack, env)
        gateway, db = start_gateway(stack, env, upstream, champion, tmp)

        start = time.perf_counter()
        result = replay_all(gateway, replayed, args.workers)
        took = time.perf_counter() - start
        emit(f"replay: {result.answered}/{result.sent} answered, {result.feedback} scored, "
             f"{result.failed} failed in {took:.1f}s ({result.sent / took:.0f} prompts/s, "
             f"{args.workers} clients; chat + feedback per prompt); arms {result.by_arm}")

        child = {**quiet, "TIERWISE_TRAINING__MLFLOW_TRACKING_URI": uri}
        # a quick run's arms hold a few dozen labels, below ab-report's default floor of 30
        floor = ["--min-labeled", "5"] if args.quick else []
        took = tierwise(["ab-report", "--db", db, "--out", str(tmp / "ab"), "--seed",
                         str(args.seed), *floor], child)
        report = json.loads((tmp / "ab" / "report.json").read_text())
        emit(f"ab-report ({took:.1f}s):")
        print_ab(report)

        took = tierwise(["retrain", "--db", db, "--name", name, "--out", str(tmp / "rt"),
                         "--base-data", str(tmp / "base.jsonl"), "--eval-data",
                         str(tmp / "eval.jsonl"), "--seed", str(args.seed)], child)
        decision = json.loads((tmp / "rt" / "retrain_decision.json").read_text())
        emit(f"retrain ({took:.1f}s, from stored features, no prompt text):")
        print_gate(decision)
        champion = registry.alias_version(uri, name, registry.CHAMPION)
        emit(f"  registry: champion -> version {champion}, challenger -> version "
             f"{registry.alias_version(uri, name, registry.CHALLENGER)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
