"""A shipped recipe's protocol figures over several training seeds, for one or more estimators.

Not a test. ``RESULTS.md`` shows one training seed (the shipped bundle's) with bootstrap
intervals over the test rows; this prints how much the figures move with the seed (the
calibration split, early stopping, the trees' column sampling), the mean and range of APGR per
protocol split. It backs the README's seed-averaged comparisons.

    python bench/bench_seeds.py --recipe routellm_fast --estimators gbt gbt_mono --seeds 6
    python bench/bench_seeds.py --recipe routellm_fast --estimators gbt_mono --balance-tasks
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from router_model.settings import DATA_DIR, Settings
from router_model.tiers import load_tiers
from training.dataset import build_dataset, load_rows, make_context
from training.pipeline import fit_calibrated, report_on
from training.recipes import SHIPPED
from training.sources import ensure_converted
from training.train import protocol_splits


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=sorted(SHIPPED), default="routellm_fast")
    p.add_argument("--estimators", nargs="+", default=None, help="default: the recipe's own")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--balance-tasks", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    recipe = replace(SHIPPED[args.recipe], balance_tasks=args.balance_tasks)
    paths = Settings().training
    ensure_converted(paths.sources_dir, paths.labeled_dir)
    tiers = load_tiers(DATA_DIR / "tiers" / recipe.tiers_file)
    names = [t.name for t in tiers]
    ds = build_dataset(
        load_rows([paths.labeled_dir / f for f in recipe.data_files]),
        tiers,
        make_context(recipe.feature_set, paths.cache_dir),
        tolerance=recipe.tolerance,
        source=recipe.name,
    )
    # the splits are the shipped ones (seed 0); the training seed varies
    splits = protocol_splits(ds, recipe, paths.seed)
    key = "apgr" if len(tiers) == 2 else "aiq"
    out(f"{recipe.name}: {key.upper()} mean (min-max) over {args.seeds} training seeds"
        f"{', tasks balanced' if recipe.balance_tasks else ''}")
    out(f"{'estimator':<12}" + "".join(f"{s:>26}" for s in splits))
    for est in args.estimators or recipe.candidates:
        cells = []
        for tr, te in splits.values():
            vals = [
                report_on(
                    fit_calibrated(ds.subset(tr), est, len(tiers), seed,
                                   balance_tasks=recipe.balance_tasks),
                    ds.subset(te),
                    names,
                )[key]
                for seed in range(args.seeds)
            ]
            v = np.asarray([np.nan if x is None else x for x in vals], dtype=np.float64)
            cells.append(f"{np.nanmean(v):.3f} ({np.nanmin(v):.3f}-{np.nanmax(v):.3f})")
        out(f"{est:<12}" + "".join(f"{c:>26}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
