"""How far a prompt-only router can go on the two-tier protocol's hardest splits.

Not a test. Issue 2 asks the two-tier bundle for APGR >= 0.65 on held-out MMLU domains and >= 0.62
on GSM8K when trained on MMLU alone. This prints, for a routellm recipe and its estimators (seed-0
splits, the ones in ``RESULTS.md``), what bounds those figures on this data:

1. Held-out MMLU domains. The *domain oracle* scores every test prompt by its domain's true mean
   gain from GPT-4 over Mixtral on the test rows: the best routing from knowing perfectly how hard
   each subject is for Mixtral against GPT-4, and nothing about the single question. Beside it,
   the estimator's APGR, and its scores split into a per-domain mean and a within-domain part: each
   alone, and the within-domain part used to order prompts inside the oracle's domains.
2. GSM8K. The estimator trained on MMLU alone (the protocol) against the same estimator trained
   on GSM8K itself (stratified 5-fold cross-validation, every GSM8K prompt scored by a model that
   did not see it): the second is what the features reach when the task is in training.
3. Routing by prompt length (token count) on both, and on the validation task of
   ``bench_cross_task.py`` (MMLU-Pro questions not from MMLU, Mixtral-8x7B against gpt-4o).

    python bench/bench_ceilings.py                               # routellm_fast, its estimator
    python bench/bench_ceilings.py --recipe routellm --estimators gbt logreg
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from bench_cross_task import STRONG, WEAK, load_task  # a sibling script
from numpy.typing import NDArray
from scipy.stats import rankdata
from sklearn.model_selection import StratifiedKFold

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

F64 = NDArray[np.float64]


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def figure(label: str, value: float) -> None:
    out(f"  {label:<50} {value:.3f}")


def report(scores: F64, costs: F64, score: F64) -> dict[str, Any]:
    """The report of routing to the strong tier by descending ``score`` (ties move together)."""
    # any real-valued score becomes a probability-like value in (0, 1) with the same order
    rank = rankdata(score, method="average") / (len(score) + 1)
    return build_report(scores, costs, ["weak", "strong"], np.column_stack([1.0 - rank, rank]))


def apgr(scores: F64, costs: F64, score: F64) -> float:
    return float(report(scores, costs, score)["apgr"])


def strong_score(train: Dataset, test: Dataset, estimator: str, seed: int) -> F64:
    fitted = fit_calibrated(train, estimator, 2, seed)
    return predict_proba_full(fitted.estimator, test.X, 2)[:, 1]


def by_group(groups: Sequence[str], values: F64) -> F64:
    """Each row's group mean of ``values``."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    return np.asarray(sums[inverse] / np.bincount(inverse)[inverse], dtype=np.float64)


def domains(
    ds: Dataset, tr: list[int], te: list[int], estimators: Sequence[str], seeds: int
) -> None:
    test = ds.subset(te)
    ap = partial(apgr, test.scores, test.costs)
    # a domain's mean gain from GPT-4 over Mixtral: the order that maximises APGR among routers
    # that give every prompt of a domain the same score
    oracle = by_group(test.groups, test.scores[:, 1] - test.scores[:, 0])
    best = report(test.scores, test.costs, oracle)
    out(f"held-out MMLU domains ({len(set(test.groups))} domains, {len(te)} rows)")
    figure("domain oracle (true per-domain gain from GPT-4)", best["apgr"])
    figure("domain oracle's CPT(50%)", best["cpt50"])
    figure("prompt length (tokens)", ap(test.n_tokens.astype(np.float64)))
    train = ds.subset(tr)
    for est in estimators:
        rows: dict[str, list[float]] = {"own": [], "cpt50": [], "domain mean": [], "within": [],
                                        "oracle+": []}
        for seed in range(seeds):
            p = strong_score(train, test, est, seed)
            mean = by_group(test.groups, p)
            own = report(test.scores, test.costs, p)
            rows["own"].append(own["apgr"])
            rows["cpt50"].append(own["cpt50"])
            rows["domain mean"].append(ap(mean))
            rows["within"].append(ap(p - mean))
            # lexicographic: the oracle's domain order, the estimator's order inside a domain
            rows["oracle+"].append(ap(oracle + 1e-3 * (p - mean)))
        m = {k: f"{np.mean(v):.3f}" for k, v in rows.items()}
        out(f"  {est}: own {m['own']} (CPT(50%) {m['cpt50']}), its domain means alone "
            f"{m['domain mean']}, its within-domain part alone {m['within']}, oracle + its "
            f"within-domain order {m['oracle+']}")


def gsm8k(
    ds: Dataset, tr: list[int], te: list[int], estimators: Sequence[str], seeds: int
) -> None:
    test = ds.subset(te)
    ap = partial(apgr, test.scores, test.costs)
    train = ds.subset(tr)
    out(f"GSM8K ({len(te)} rows, {np.mean(test.labels == 1):.0%} need GPT-4)")
    figure("prompt length (tokens)", ap(test.n_tokens.astype(np.float64)))
    for est in estimators:
        transfer = [ap(strong_score(train, test, est, s)) for s in range(seeds)]
        within = []
        for seed in range(seeds):
            score = np.zeros(len(te))
            folds = StratifiedKFold(5, shuffle=True, random_state=seed)
            for a, b in folds.split(test.X, test.labels):
                score[b] = strong_score(test.subset(a), test.subset(b), est, seed)
            within.append(ap(score))
        out(f"  {est}: trained on MMLU {np.mean(transfer):.3f}, trained on GSM8K (5-fold) "
            f"{np.mean(within):.3f} ({min(within):.3f}-{max(within):.3f})")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=[r for r in sorted(SHIPPED) if r.startswith("routellm")],
                   default="routellm_fast")
    p.add_argument("--estimators", nargs="+", default=None, help="default: the recipe's own")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--labeled-dir", type=Path, default=None, help="default: settings")
    p.add_argument("--quick", action="store_true",
                   help="one training seed (a smoke run, no figures)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    recipe = SHIPPED[args.recipe]
    if args.quick:
        args.seeds = 1
    paths = Settings().training
    labeled = args.labeled_dir or paths.labeled_dir
    ensure_converted(paths.sources_dir, labeled)
    ctx = make_context(recipe.feature_set, paths.cache_dir)
    tiers, ds = recipe_dataset(recipe, labeled, DATA_DIR / "tiers", ctx)
    splits = protocol_splits(ds, recipe, paths.seed)
    estimators = args.estimators or list(recipe.candidates)
    out(f"{recipe.name} ({recipe.feature_set} features), APGR, mean over {args.seeds} seeds")
    domains(ds, *splits["unseen"], estimators, args.seeds)
    gsm8k(ds, *splits["task:mmlu->gsm8k"], estimators, args.seeds)
    prompts, scores = load_task(labeled / "mmlu_pro.jsonl", WEAK, STRONG)
    feats = featurize(prompts, ctx.featurizer)
    out(f"validation task ({len(prompts)} rows)")
    costs = estimate_costs(feats.n_tokens, tiers)
    figure("prompt length (tokens)", apgr(scores, costs, feats.n_tokens.astype(np.float64)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
