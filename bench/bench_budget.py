"""The gateway's budget knob (``service.gateway.levers.budget``) replayed on real prompts in
arrival order.

Not a test. The prompts of ``bench_cross_task.py``'s tasks (prompts none of the two-tier bundles
trained on, with a stand-in pair's scores) arrive one by one in a seeded random order: first
every ``mmlu_pro`` prompt, then every ``llmrouter`` prompt (a change of traffic mid-stream). Each
arrival is routed at the knob the gateway would use (the bundle's default knob until the window
holds ``--min-samples`` decisions, then ``BudgetKnob.knob()`` capped at the default) and then
joins the window, exactly as ``service.gateway.planning`` does. Printed per phase and per block of
``--block`` arrivals: the top tier's realised share against the target, and the share of the
stand-in pair's quality gap recovered (PGR); beside them what the bundle's default knob does,
and the knob fitted in hindsight on the whole phase (``tierwise knob --top-share`` on every
prompt of it: the best a fixed knob can do for the budget, and not available online).

    python bench/bench_budget.py [--bundle data/models/routellm_fast] [--top-share 0.3]
    python bench/bench_budget.py --quick     # 300 arrivals per phase, a window of 200: seconds
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bench_cross_task import task_rows
from numpy.typing import NDArray

from router_model.policy import choose_tiers, knob_for_top_share
from router_model.router import ComplexityRouter
from router_model.settings import DATA_DIR, Settings
from service.gateway.levers.budget import BudgetKnob
from training.sources import ensure_converted


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def pgr(scores: NDArray[np.float64], chosen: NDArray[np.int64]) -> float:
    """Share of the weak → strong quality gap these choices recover."""
    weak, strong = scores[:, 0].mean(), scores[:, 1].mean()
    got = scores[np.arange(len(scores)), chosen].mean()
    return float((got - weak) / (strong - weak)) if strong != weak else float("nan")


def replay(proba: NDArray[np.float64], budget: BudgetKnob, default: float) -> NDArray[np.int64]:
    """Each row's tier at the knob in force when it arrived; every row then joins the window."""
    chosen = np.empty(len(proba), dtype=np.int64)
    names = budget.ladder
    for i, row in enumerate(proba):
        knob = budget.knob()
        # capped at the default knob, as service.gateway.planning.Planner.budget_knob does
        chosen[i] = choose_tiers(row[None, :], default if knob is None else min(knob, default))[0]
        budget.observe(dict(zip(names, row.tolist(), strict=True)), "bench")
    return chosen


#: ``--quick``: arrivals per phase.
QUICK_ARRIVALS = 300


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=DATA_DIR / "models" / "routellm_fast")
    p.add_argument("--top-share", type=float, default=0.3)
    p.add_argument("--window", type=int, default=2000)
    p.add_argument("--min-samples", type=int, default=200)
    p.add_argument("--block", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labeled-dir", type=Path, default=None, help="default: settings")
    p.add_argument("--quick", action="store_true",
                   help="300 arrivals per phase, window 200, knob from 50 (a smoke run)")
    args = p.parse_args(argv)
    cap = QUICK_ARRIVALS if args.quick else None
    if args.quick:
        args.window, args.min_samples, args.block = 200, 50, 100
    paths = Settings().training
    labeled = args.labeled_dir or paths.labeled_dir
    ensure_converted(paths.sources_dir, labeled)
    router = ComplexityRouter.from_artifact(args.bundle)
    if len(router.tiers) != 2:
        out(f"{args.bundle}: {len(router.tiers)} tiers; the stand-in scores have two")
        return 2
    rng = np.random.default_rng(args.seed)
    phases = []
    for task in ("mmlu_pro", "llmrouter"):
        _, _, prompts, scores = task_rows(task, labeled)
        order = rng.permutation(len(prompts))[:cap]
        proba = router.predict_proba([prompts[i] for i in order])
        phases.append((task, scores[order], proba))
    budget = BudgetKnob(args.top_share, args.window, args.min_samples,
                        [t.name for t in router.tiers])
    default = router.manifest.threshold
    chosen = replay(np.concatenate([ph[2] for ph in phases]), budget, default)
    out(f"{args.bundle}: target {args.top_share:.0%} of calls to {router.tiers[-1].name}, "
        f"window {args.window}, knob from {args.min_samples} decisions, default knob {default:.3f}")
    out(f"{'phase':<10} {'arrivals':>9} {'budget: share':>14} {'PGR':>6} "
        f"{'default: share':>15} {'PGR':>6} {'hindsight: share':>17} {'PGR':>6}")
    start = 0
    for task, scores, proba in phases:
        mine = chosen[start:start + len(scores)]
        fixed = choose_tiers(proba, default)
        hind = choose_tiers(proba, knob_for_top_share(proba, args.top_share))
        out(f"{task:<10} {len(scores):>9} {np.mean(mine == 1):>14.3f} {pgr(scores, mine):>6.3f} "
            f"{np.mean(fixed == 1):>15.3f} {pgr(scores, fixed):>6.3f} "
            f"{np.mean(hind == 1):>17.3f} {pgr(scores, hind):>6.3f}")
        for b in range(0, len(scores), args.block):
            part = slice(b, min(b + args.block, len(scores)))
            out(f"  {task} arrivals {b + 1:>5}-{part.stop:<5} budget share "
                f"{np.mean(mine[part] == 1):.3f}  PGR {pgr(scores[part], mine[part]):.3f}")
        start += len(scores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
