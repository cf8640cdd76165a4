"""Time training the shipped bundles: features (cold/warm embedding cache), fit, export.

Prints one row per recipe. Cold = embeddings computed by the encoder (an empty cache in a temp
dir); warm = the cache filled by the cold pass. Evaluation protocols and candidate comparison are
not included (``tierwise train --all --compare`` runs those on top).

    python bench/bench_training.py [--cold]     # --cold also times the encoder pass (slow)
    python bench/bench_training.py --quick      # routellm_fast on 1,000 rows: a smoke run
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from router_model.settings import DATA_DIR, Settings
from router_model.tiers import load_tiers
from training.dataset import build_dataset, load_rows, make_context
from training.export import export_checked
from training.pipeline import fit_calibrated
from training.recipes import SHIPPED
from training.sources import ensure_converted

#: ``--quick``: the one recipe timed (no encoder) and its rows, seeded.
QUICK_RECIPE, QUICK_ROWS = "routellm_fast", 1000


def _time_recipe(name: str, cache_dir: Path, labeled: Path,
                 cap: int | None = None) -> tuple[float, float, int]:
    recipe = SHIPPED[name]
    tiers = load_tiers(DATA_DIR / "tiers" / recipe.tiers_file)
    start = time.perf_counter()
    ctx = make_context(recipe.feature_set, cache_dir)
    rows = load_rows([labeled / f for f in recipe.data_files])
    if cap is not None:
        rows = [rows[i] for i in sorted(random.Random(0).sample(range(len(rows)), cap))]
    ds = build_dataset(rows, tiers, ctx, tolerance=recipe.tolerance, source=name)
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    fitted = fit_calibrated(ds, recipe.candidates[0], len(tiers), seed=0)
    export_checked(fitted.estimator, ds.X[fitted.cal_idx], len(tiers))
    return features_s, time.perf_counter() - start, len(ds.rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="also time an empty embedding cache")
    parser.add_argument("--labeled-dir", type=Path, default=None, help="default: settings")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_RECIPE} on {QUICK_ROWS} rows only (a smoke run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    labeled = args.labeled_dir or settings.training.labeled_dir
    ensure_converted(settings.training.sources_dir, labeled)
    recipes = [QUICK_RECIPE] if args.quick else list(SHIPPED)
    cap = QUICK_ROWS if args.quick else None
    out = sys.stdout
    out.write(f"{'recipe':<15}{'rows':>7}{'cache':>7}{'features s':>12}{'fit+export s':>14}\n")
    totals = {"warm": 0.0, "cold": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        modes = (
            [("cold", Path(tmp)), ("warm", Path(tmp))]
            if args.cold
            else [("warm", settings.training.cache_dir)]
        )
        for mode, cache in modes:
            for name in recipes:
                feat_s, fit_s, n = _time_recipe(name, cache, labeled, cap)
                totals[mode] += feat_s + fit_s
                out.write(f"{name:<15}{n:>7}{mode:>7}{feat_s:>12.1f}{fit_s:>14.1f}\n")
    for mode, total in totals.items():
        if total:
            out.write(f"total {mode}: {total:.1f} s ({total / 60:.1f} min)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
