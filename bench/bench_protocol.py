"""The selection protocol: every candidate router scored on every held-out task this repository can
form, leave-one-task-out, with baselines; the shipped default is chosen from its table.

Not a test (``tests/unit/bench/test_bench_protocol.py`` runs ``--quick`` so it cannot rot). Tasks
(``protocol_data.py``): held-out MMLU subjects (the recipes' ten), MMLU -> GSM8K, GSM8K -> MMLU,
MMLU-Pro questions not from MMLU (Mixtral-8x7B vs gpt-4o standing in), and each LLMRouter task
family (llama-3.1-8b vs nemotron-51b standing in). Every candidate trains on RouteLLM rows only
(plus, for ``+aux`` candidates, the other sources' rows that are not the held-out task's). Per
task: APGR (``training.report.build_report`` on the scores' ranks, so ties move together) and its
bootstrap 95% interval (``training.bootstrap``); then the mean over tasks and the worst task.

Rule (issue 17): ship the candidate with the best mean whose worst task is not below random
(0.5), if it beats the plain embedding baseline's mean; otherwise ship that baseline.

    python bench/bench_protocol.py                  # full data, every candidate (~10 min)
    python bench/bench_protocol.py --quick          # a seeded slice of every task, a few candidates
    python bench/bench_protocol.py --only emb_lr "emb_lr +aux" --json out/protocol.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from protocol_candidates import CANDIDATES, QUICK, train_set
from protocol_data import F64, Pool, Task, build_pool, load_sources, tasks
from scipy.stats import rankdata

from router_model.settings import DATA_DIR, Settings
from router_model.tiers import load_tiers
from training.bootstrap import bootstrap_ci
from training.data import estimate_costs
from training.dataset import make_context
from training.report import build_report
from training.sources import ensure_converted

RANDOM = "random"
QUICK_ROWS_PER_GROUP = 10
QUICK_RESAMPLES = 50


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def measure(pool: Pool, task: Task, score: F64, costs: F64,
            resamples: int, seed: int) -> dict[str, Any]:
    """APGR of routing the task's rows by ``score`` (ranked), its 95% interval, and random's."""
    rank = rankdata(score, method="average") / (len(score) + 1)
    proba = np.column_stack([1.0 - rank, rank])
    scores = pool.scores[task.test]
    rep = build_report(scores, costs, ["weak", "strong"], proba)
    ci = bootstrap_ci(scores, costs, proba, resamples=resamples, seed=seed)
    return {"apgr": rep["apgr"], "ci": ci["apgr"], "random": rep["baselines"]["random"]["apgr"]}


def run(pool: Pool, names: Sequence[str], resamples: int,
        seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """``{candidate: {task: measure(...)}}``, plus the ``random`` row, over every task."""
    tiers = load_tiers(DATA_DIR / "tiers" / "routellm.yaml")
    table: dict[str, dict[str, dict[str, Any]]] = {RANDOM: {}}
    for task in tasks(pool):
        costs = estimate_costs(pool.n_tokens[task.test], tiers)
        X, prompts = pool.X[task.test], [pool.prompts[i] for i in task.test]
        for name in names:
            cand, with_aux = CANDIDATES[name]
            start = time.perf_counter()
            scorer = cand(train_set(pool, task, with_aux=with_aux), seed)
            m = measure(pool, task, scorer(X, prompts), costs, resamples, seed)
            m["seconds"] = round(time.perf_counter() - start, 1)
            table.setdefault(name, {})[task.name] = m
            logging.getLogger(__name__).info("%s %s: %s", task.name, name, m)
            table[RANDOM][task.name] = {"apgr": m["random"], "ci": None}
        logging.getLogger(__name__).info("task %s (%d rows) done", task.name, task.test.size)
    return table


def summarise(row: dict[str, dict[str, Any]]) -> tuple[float, float, str]:
    """Mean APGR over tasks, the worst task's APGR and its name (undefined tasks left out)."""
    vals = {t: m["apgr"] for t, m in row.items() if m["apgr"] is not None}
    worst = min(vals, key=lambda t: (vals[t], t))
    return float(np.mean(list(vals.values()))), float(vals[worst]), worst


def choose(table: dict[str, dict[str, dict[str, Any]]], baseline: str = "emb_lr") -> str:
    """Issue 17's rule: the best mean whose worst task is not below random, if it beats the
    plain embedding baseline's mean; else the baseline. Ties go to the earlier candidate."""
    base_mean = summarise(table[baseline])[0]
    ok = [n for n in table if n != RANDOM and summarise(table[n])[1] >= 0.5]
    best = max(ok, key=lambda n: summarise(table[n])[0], default=baseline)
    return best if summarise(table[best])[0] > base_mean else baseline


def print_table(table: dict[str, dict[str, dict[str, Any]]], n_rows: dict[str, int]) -> None:
    names = list(next(iter(table.values())))
    width = max(len(n) for n in table) + 1
    out("APGR per held-out task (n rows), mean over tasks and worst task")
    out(f"{'candidate':<{width}}" + "".join(f"{t[:12]:>13}" for t in names)
        + f"{'mean':>8}{'worst':>8}  worst task")
    out(f"{'':<{width}}" + "".join(f"{'(' + str(n_rows[t]) + ')':>13}" for t in names))
    for cand, row in table.items():
        cells = "".join(f"{_fmt(row[t]['apgr']):>13}" for t in names)
        mean, worst, where = summarise(row)
        out(f"{cand:<{width}}{cells}{mean:8.3f}{worst:8.3f}  {where}")
    out()
    out("95% paired-bootstrap intervals of APGR")
    for cand, row in table.items():
        if cand == RANDOM:
            continue
        cells = "".join(f"{_interval(row[t]['ci']):>13}" for t in names)
        out(f"{cand:<{width}}{cells}")


def markdown(table: dict[str, dict[str, dict[str, Any]]], n_rows: dict[str, int],
             chosen: str) -> str:
    """The table as a RESULTS.md section (``training.results`` includes ``reports/protocol.md``)."""
    names = list(next(iter(table.values())))
    lines = [
        "## Selection protocol (`python bench/bench_protocol.py`)",
        "",
        "Every candidate trained on RouteLLM rows only (`+aux`: plus the other sources' rows that "
        "are not the held-out task's) and scored on tasks it never saw: held-out MMLU subjects, "
        "MMLU -> GSM8K, GSM8K -> MMLU (Mixtral-8x7B vs GPT-4-1106), MMLU-Pro questions not from "
        "MMLU (Mixtral-8x7B vs gpt-4o), LLMRouter task families (llama-3.1-8b vs nemotron-51b). "
        "APGR with its paired-bootstrap 95% interval; mean over tasks; worst task. Rule: the best "
        "mean whose worst task is not below random (0.5), if it beats the plain embedding "
        f"baseline `emb_lr`. Chosen: **{chosen}**.",
        "",
        "| candidate | " + " | ".join(f"{t} (n={n_rows[t]})" for t in names)
        + " | mean | worst |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for cand, row in table.items():
        mean, worst, where = summarise(row)
        cells = [_fmt(row[t]["apgr"]) + ("" if not row[t]["ci"] else " " + _interval(row[t]["ci"]))
                 for t in names]
        lines.append(f"| {cand} | " + " | ".join(cells) + f" | {mean:.3f} | {worst:.3f} "
                     f"({where}) |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _interval(ci: list[float] | None) -> str:
    return "—" if not ci else f"[{ci[0]:.2f},{ci[1]:.2f}]"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_ROWS_PER_GROUP} rows per group, {QUICK_RESAMPLES} resamples, "
                        "a few candidates, no embedding cache")
    p.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="candidates to score")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (1000)")
    p.add_argument("--labeled-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the table here")
    p.add_argument("--markdown", type=Path, default=None,
                   help="also write it as markdown (reports/protocol.md goes into RESULTS.md)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # undefined resamples of tiny tasks are expected here; the table shows the intervals
    logging.getLogger("training.bootstrap").setLevel(logging.ERROR)
    paths = Settings().training
    labeled = args.labeled_dir or paths.labeled_dir
    ensure_converted(paths.sources_dir, labeled)
    cap = QUICK_ROWS_PER_GROUP if args.quick else None
    ctx = make_context("full", None if args.quick else paths.cache_dir)
    pool = build_pool(load_sources(labeled, cap, args.seed), ctx)
    names = args.only or (QUICK if args.quick else list(CANDIDATES))
    resamples = args.resamples or (QUICK_RESAMPLES if args.quick else 1000)
    table = run(pool, names, resamples, args.seed)
    n_rows = {t.name: int(t.test.size) for t in tasks(pool)}
    print_table(table, n_rows)
    chosen = choose(table) if "emb_lr" in table else "(needs emb_lr)"
    out()
    out(f"chosen by the rule: {chosen}")
    if args.markdown is not None:
        args.markdown.write_text(markdown(table, n_rows, chosen), encoding="utf-8")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
