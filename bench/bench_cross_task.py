"""Two-tier bundles on a task none trained on: MMLU-Pro questions that did not come from MMLU.

Not a test. The validation task on which ``gbt_mono``'s monotone prior (``training.fit``) was
chosen; no figure in ``RESULTS.md`` uses it. Rows: ``data/labeled/mmlu_pro.jsonl`` (``tierwise
convert``) whose source is not ``ori_mmlu`` (STEM-website, TheoremQA and SciBench questions,
4,264 rows), with both ``--weak`` and ``--strong`` scored. The RouteLLM pair is not in MMLU-Pro, so
the nearest pair stands in: Mixtral-8x7B (the bundles' own weak model) against gpt-4o. Prints each
bundle's APGR and CPT(50%) with bootstrap 95% intervals, and the paired difference of every bundle
against the first.

    python bench/bench_cross_task.py [--bundles data/models/routellm_fast data/models/routellm ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from router_model.features import featurize
from router_model.router import ComplexityRouter
from router_model.settings import DATA_DIR, Settings
from training.bootstrap import bootstrap_ci, paired_diff_ci
from training.data import estimate_costs, read_labeled
from training.report import build_report
from training.sources import ensure_converted, mmlu_origin

WEAK = "Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4o-2024-05-13"


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def load_task(path: Path, weak: str, strong: str) -> tuple[list[str], NDArray[np.float64]]:
    """Prompts and ``(n, 2)`` scores of the rows not from MMLU that score both models."""
    prompts, scores = [], []
    for row in read_labeled(path):
        if mmlu_origin(row) is not None or weak not in row.scores or strong not in row.scores:
            continue
        prompts.append(row.prompt)
        scores.append([row.scores[weak], row.scores[strong]])
    return prompts, np.asarray(scores, dtype=np.float64)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = DATA_DIR / "models"
    p.add_argument("--bundles", type=Path, nargs="+",
                   default=[models / "routellm_fast", models / "routellm"])
    p.add_argument("--weak", default=WEAK)
    p.add_argument("--strong", default=STRONG)
    args = p.parse_args(argv)
    paths = Settings().training
    ensure_converted(paths.sources_dir, paths.labeled_dir)
    prompts, scores = load_task(paths.labeled_dir / "mmlu_pro.jsonl", args.weak, args.strong)
    out(f"{len(prompts)} rows; {args.weak} right on {scores[:, 0].mean():.3f}, "
        f"{args.strong} on {scores[:, 1].mean():.3f}")
    out(f"{'bundle':<36} {'APGR':>6} {'95% CI':>15} {'CPT(50%)':>9} {'95% CI':>15}  vs first: APGR")
    first: NDArray[np.float64] | None = None
    for bundle in args.bundles:
        router = ComplexityRouter.from_artifact(bundle)
        if len(router.tiers) != 2:
            out(f"{str(bundle)[-36:]:<36} skipped: {len(router.tiers)} tiers")
            continue
        feats = featurize(prompts, router.featurizer)
        proba = router.proba_from_features(feats.matrix)
        costs = estimate_costs(feats.n_tokens, router.tiers)
        rep = build_report(scores, costs, [t.name for t in router.tiers], proba)
        ci = bootstrap_ci(scores, costs, proba)
        diff = "" if first is None else str(np.round(
            paired_diff_ci(scores, costs, first, proba, "apgr") or [np.nan, np.nan], 3).tolist())
        a, c = ci["apgr"] or [np.nan, np.nan], ci["cpt50"] or [np.nan, np.nan]
        out(f"{str(bundle)[-36:]:<36} {rep['apgr']:6.3f} [{a[0]:.3f}, {a[1]:.3f}] "
            f"{rep['cpt50']:9.3f} [{c[0]:.3f}, {c[1]:.3f}]  {diff}")
        first = proba if first is None else first
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
