"""Time training the shipped bundles: features (cold/warm embedding cache), fit, export.

Prints one row per recipe. Cold = embeddings computed by the encoder (an empty cache in a temp
dir); warm = the cache filled by the cold pass. Evaluation protocols and candidate comparison are
not included (``tierwise train --all --compare`` runs those on top).

    python bench/bench_training.py [--cold]     # --cold also times the encoder pass (slow)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from router_model.settings import DATA_DIR, Settings
from router_model.tiers import load_tiers
from training.dataset import build_dataset, load_rows, make_context
from training.export import export_checked
from training.pipeline import fit_calibrated
from training.recipes import SHIPPED
from training.sources import ensure_converted


def _time_recipe(name: str, cache_dir: Path) -> tuple[float, float, int]:
    recipe = SHIPPED[name]
    labeled = Settings().training.labeled_dir
    tiers = load_tiers(DATA_DIR / "tiers" / recipe.tiers_file)
    start = time.perf_counter()
    ctx = make_context(recipe.feature_set, cache_dir)
    rows = load_rows([labeled / f for f in recipe.data_files])
    ds = build_dataset(rows, tiers, ctx, tolerance=recipe.tolerance, source=name)
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    fitted = fit_calibrated(ds, recipe.candidates[0], len(tiers), seed=0)
    export_checked(fitted.estimator, ds.X[fitted.cal_idx], len(tiers))
    return features_s, time.perf_counter() - start, len(ds.rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="also time an empty embedding cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    ensure_converted(settings.training.sources_dir, settings.training.labeled_dir)
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
            for name in SHIPPED:
                feat_s, fit_s, n = _time_recipe(name, cache)
                totals[mode] += feat_s + fit_s
                out.write(f"{name:<15}{n:>7}{mode:>7}{feat_s:>12.1f}{fit_s:>14.1f}\n")
    for mode, total in totals.items():
        if total:
            out.write(f"total {mode}: {total:.1f} s ({total / 60:.1f} min)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
