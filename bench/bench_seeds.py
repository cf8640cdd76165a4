"""A shipped recipe's protocol figures over several training seeds, for one or more estimators.

Not a test. ``RESULTS.md`` shows one training seed (the shipped bundle's) with bootstrap
intervals over the test rows; this prints how much the figures move with the seed (the
calibration split, early stopping, the trees' column sampling), the mean and range of APGR per
protocol split. For the two-tier routellm recipes it adds the validation task of
``bench_cross_task.py``, scored by a model fitted on all the recipe's rows (as the shipped bundle
is). It backs docs/training.md's seed-averaged comparisons.

    python bench/bench_seeds.py --recipe routellm_fast --estimators gbt gbt_mono --seeds 6
    python bench/bench_seeds.py --recipe routellm_fast --estimators gbt_mono --balance-tasks
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_cross_task import STRONG, WEAK, load_task  # a sibling script
from numpy.typing import NDArray

from router_model.features import featurize
from router_model.settings import DATA_DIR, Settings
from training.data import estimate_costs
from training.dataset import Dataset, make_context
from training.fit import predict_proba_full
from training.pipeline import fit_calibrated
from training.protocol import protocol_splits, recipe_dataset
from training.recipes import SHIPPED
from training.report import build_report
from training.sources import ensure_converted


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=sorted(SHIPPED), default="routellm_fast")
    p.add_argument("--estimators", nargs="+", default=None, help="default: the recipe's own")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--labeled-dir", type=Path, default=None, help="default: settings")
    p.add_argument("--quick", action="store_true",
                   help="one training seed (a smoke run, no figures)")
    p.add_argument("--balance-tasks", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    recipe = replace(SHIPPED[args.recipe], balance_tasks=args.balance_tasks)
    if args.quick:
        args.seeds = 1
    paths = Settings().training
    labeled = args.labeled_dir or paths.labeled_dir
    ensure_converted(paths.sources_dir, labeled)
    ctx = make_context(recipe.feature_set, paths.cache_dir)
    tiers, ds = recipe_dataset(recipe, labeled, DATA_DIR / "tiers", ctx)
    names = [t.name for t in tiers]
    # column -> (training rows, test features, scores, costs); the splits are the shipped ones
    # (seed 0), the training seed varies
    columns: dict[str, tuple[Dataset, NDArray[np.float32], NDArray[np.float64],
                             NDArray[np.float64]]] = {}
    for name, (tr, te) in protocol_splits(ds, recipe, paths.seed).items():
        test = ds.subset(te)
        columns[name] = (ds.subset(tr), test.X, test.scores, test.costs)
    if recipe.name.startswith("routellm"):
        prompts, scores = load_task(labeled / "mmlu_pro.jsonl", WEAK, STRONG)
        feats = featurize(prompts, ctx.featurizer)
        columns["validation task"] = (ds, feats.matrix, scores,
                                      estimate_costs(feats.n_tokens, tiers))
    key = "apgr" if len(tiers) == 2 else "aiq"
    out(f"{recipe.name}: {key.upper()} mean (min-max) over {args.seeds} training seeds"
        f"{', tasks balanced' if recipe.balance_tasks else ''}")
    out(f"{'estimator':<12}" + "".join(f"{s:>26}" for s in columns))
    for est in args.estimators or recipe.candidates:
        cells = []
        for train, X, scores, costs in columns.values():
            vals = []
            for seed in range(args.seeds):
                fitted = fit_calibrated(train, est, len(tiers), seed,
                                        balance_tasks=recipe.balance_tasks)
                proba = predict_proba_full(fitted.estimator, X, len(tiers))
                vals.append(build_report(scores, costs, names, proba)[key])
            v = np.asarray([np.nan if x is None else x for x in vals], dtype=np.float64)
            cells.append(f"{np.nanmean(v):.3f} ({np.nanmin(v):.3f}-{np.nanmax(v):.3f})")
        out(f"{est:<12}" + "".join(f"{c:>26}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
