"""The learning curve of shadow labels over many shuffles: mean and worst, not one draw.

Not a test. ``bench_learning.py`` streams one shuffle of a kind through a real gateway, so its
figures are one draw: on 1,000 held-out prompts with a small weak/strong gap, a router's APGR
moves by 0.1 from one shuffle to the next. This runs the fits that run would end in, for
``--seeds`` shuffles, each ``--fit-on`` rule and each ``--weights`` traffic weight, without
the gateway: the label a shadow sample stores is the recorded score on the judge's scale
(``bench_learning``'s fake judge rates ``1 + round(9 * score)``, read back as ``(N - 1) / 9``),
and ``tierwise retrain`` fits the bundle's recipe on its base rows (weight 1) plus the labeled
traffic (the traffic weight), as here, on the score gain or the label (``--fit-on``; every row
here has both tiers scored).

Per shuffle: the shipped bundle, the reference (the recipe on base + every stream row + the
other folds of the held-out rows, ``--folds``-fold CV, with the same rule and weight) and the
challenger after each of ``--steps`` labels, all as APGR on the shuffle's ``--holdout`` rows.
Then, per rule and weight, the mean over shuffles, and the mean and the worst of
(challenger - reference) with the mean's standard error. Kinds: ``llmrouter``
(``bench_learning``'s: LLMRouter's non-benchmark clusters, llama-3.1-8b / nemotron-51b as the
tiers) and ``mmlu_pro`` (``bench_cross_task``'s: MMLU-Pro questions not from MMLU,
Mixtral-8x7B / gpt-4o).

    python bench/bench_learning_seeds.py [--kind llmrouter] [--seeds 10] [--steps 300 1000]
                                         [--fit-on auto gain label] [--weights 10]
    python bench/bench_learning_seeds.py --quick    # 1 shuffle, 40 labels, fixture base rows
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_gateway import emit  # noqa: E402
from bench_learning import (  # noqa: E402
    KIND,
    QUICK_BASE,
    Kind,
    cv_reference,
    onnx_proba,
    retrain_weights,
    split_kind,
)
from protocol_data import load_sources  # noqa: E402

from router_model.artifact import read_bundle  # noqa: E402
from router_model.judge import MAX_RATING, MIN_RATING  # noqa: E402
from router_model.settings import Settings  # noqa: E402
from training.data import LabeledRow, dedupe  # noqa: E402
from training.dataset import Dataset, build_dataset, concat, load_rows, make_context  # noqa: E402
from training.fit import predict_proba_full  # noqa: E402
from training.pipeline import fit_calibrated, gain_marks, select_fit_rule  # noqa: E402
from training.recipes import SHIPPED  # noqa: E402
from training.report import build_report  # noqa: E402
from training.sources import ensure_converted  # noqa: E402

SCALE = MAX_RATING - MIN_RATING


def judged(score: float) -> float:
    """The label a shadow sample stores for a recorded score (``bench_learning``'s fake judge)."""
    return round(SCALE * score) / SCALE


def kind_rows(labeled: Path, models: list[str], kind: str) -> list[LabeledRow]:
    """The kind's rows, scores on the judge's scale, keyed by the bundle's tier models."""
    rows = load_sources(labeled, None, 0)[kind]
    return dedupe([LabeledRow(prompt=r.prompt, scores={models[0]: judged(w), models[1]:
                                                       judged(s)}, id=r.id, group=r.group)
                   for r, w, s in rows if kind != "llmrouter" or r.group in KIND])


def apgr(held: Dataset, proba: np.ndarray) -> float:
    return float(build_report(held.scores, held.costs, ["weak", "strong"], proba)["apgr"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "data" / "models" / "routellm")
    p.add_argument("--kind", choices=("llmrouter", "mmlu_pro"), default="llmrouter")
    p.add_argument("--seeds", type=int, default=10, help="shuffles (seeds 0..N-1)")
    p.add_argument("--fit-on", nargs="+", choices=("auto", "gain", "label"), default=["auto"],
                   help="retrain's rules (auto: the reference's rule is the one auto picks given "
                        "every stream row)")
    p.add_argument("--weights", type=float, nargs="+", default=[10.0])
    p.add_argument("--steps", type=int, nargs="+", default=[300, 1000, 3000])
    p.add_argument("--holdout", type=int, default=1000)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--labeled-dir", type=Path, default=None, help="default: settings")
    p.add_argument("--quick", action="store_true", help="1 shuffle, 40 labels (a smoke run)")
    a = p.parse_args(argv)
    logging.disable(logging.WARNING)  # resamples without a CPT at a small n: expected here
    bundle = read_bundle(a.model)[0]
    models = [t.model for t in bundle.tiers]
    settings = Settings().training
    labeled = a.labeled_dir or settings.labeled_dir
    ensure_converted(settings.sources_dir, labeled)
    base_files = tuple(labeled / f for f in SHIPPED[bundle.name].data_files)
    if a.quick:
        a.seeds, a.weights, a.steps, a.holdout, a.folds = 1, [10.0], [40], 40, 2
        base_files = (QUICK_BASE,)
    ctx = make_context(bundle.feature_set, None if a.quick else settings.cache_dir)
    tiers, tol = bundle.tier_ladder(), bundle.label_rule.tolerance
    base = build_dataset(load_rows(base_files), tiers, ctx, tolerance=tol, source="base")
    rows = kind_rows(labeled, models, a.kind)
    steps = sorted({min(s, len(rows) - a.holdout) for s in a.steps})
    emit(f"bench_learning_seeds: {a.kind}, {len(rows)} rows, {a.holdout} held out per "
         f"shuffle; base {len(base.rows)} rows; {a.seeds} shuffles; APGR on the held-out rows")
    configs = [(f, w) for f in a.fit_on for w in a.weights]
    emit(f"{'seed':>4} {'fit':>5} {'weight':>6} {'shipped':>7} {'reference':>9} "
         + " ".join(f"{f'after {n}':>11}" for n in steps))
    table = np.zeros((a.seeds, len(configs), 2 + len(steps)))
    for seed in range(a.seeds):
        kind = split_kind(rows, a.holdout, seed)
        if a.quick:
            kind = Kind(kind.held, kind.stream[:max(steps)])
        held, stream = (build_dataset(part, tiers, ctx, tolerance=tol, source=name)
                        for name, part in (("held-out", kind.held), ("stream", kind.stream)))
        shipped = apgr(held, onnx_proba(a.model, held.X))
        for j, (fit_on, w) in enumerate(configs):
            ref, _, ref_rule = cv_reference(bundle, base, stream, held, a.folds, seed,
                                            weight=w, fit_on=fit_on)
            rules = [ref_rule]
            table[seed, j, :2] = shipped, apgr(held, ref)
            for i, n in enumerate(steps):
                part = stream.subset(np.arange(n))
                weights = retrain_weights(base, n, w)
                ds, complete = concat(base, part), np.ones(len(weights), dtype=bool)
                rule = fit_on if fit_on != "auto" else select_fit_rule(
                    ds, bundle.estimator, seed, weights, complete,
                    np.arange(len(base.rows), len(ds.rows)))[0]
                rules.append(rule)
                fitted = fit_calibrated(ds, bundle.estimator, 2, seed, sample_weight=weights,
                                        gain=gain_marks(rule, complete))
                table[seed, j, 2 + i] = apgr(held, predict_proba_full(fitted.estimator,
                                                                      held.X, 2))
            shipped_, ref_, *after = table[seed, j]
            emit(f"{seed:>4} {fit_on:>5} {w:>6g} {shipped_:>7.3f} {ref_:>8.3f}{rules[0][0]} "
                 + " ".join(f"{x:>10.3f}{r[0]}" for x, r in zip(after, rules[1:], strict=True)))
    emit("(after each APGR: the rule fitted, g = gain, l = label)")
    emit("\nper rule and weight, over shuffles: mean APGR; after n labels, mean "
         "(challenger - reference) +- its standard error, and the worst shuffle's")
    for j, (fit_on, w) in enumerate(configs):
        t = table[:, j]
        diff = t[:, 2:] - t[:, 1:2]
        se = diff.std(axis=0, ddof=1) / np.sqrt(len(t)) if len(t) > 1 else np.full(len(steps),
                                                                                   np.nan)
        emit(f"  fit on {fit_on}, weight {w:g}: shipped {t[:, 0].mean():.3f}, "
             f"reference {t[:, 1].mean():.3f}; "
              + "; ".join(f"after {n}: {t[:, 2 + i].mean():.3f} ({diff[:, i].mean():+.3f} "
                          f"+- {se[i]:.3f}, worst {diff[:, i].min():+.3f})"
                          for i, n in enumerate(steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
