"""The fit → calibrate → evaluate steps on a ``Dataset``, shared by ``train`` and ``retrain``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.errors import InvalidData
from training.calibrate import calibrate
from training.data import group_split, random_split
from training.dataset import Dataset
from training.evaluate import sweep_router
from training.fit import fit_candidate, predict_proba_full
from training.report import build_report

logger = logging.getLogger(__name__)

#: Share of training rows held out to calibrate probabilities (never used to fit).
CALIBRATION_FRACTION = 0.2
#: Group splits averaged when candidates are compared.
SELECTION_FOLDS = 3


@dataclass(frozen=True)
class Fitted:
    """A calibrated estimator and what it was fitted on."""

    estimator: Any
    candidate: str
    cal_idx: NDArray[np.int64]
    fit_seconds: float


def fit_calibrated(
    ds: Dataset,
    candidate: str,
    n_classes: int,
    seed: int,
    sample_weight: NDArray[np.float64] | None = None,
    *,
    balance_tasks: bool = False,
    gain: NDArray[np.bool_] | None = None,
) -> Fitted:
    """Fit ``candidate`` on most rows and calibrate it on a held-out slice of the same rows.

    ``balance_tasks`` multiplies the weights by ``Dataset.task_weights`` in fitting; calibration
    stays unweighted, so probabilities (and the default knob) keep the rows' own mix.
    ``gain`` marks rows (two tiers only) fitted on their score gain instead of their label
    (``gain_rows``), and calibrated so too: a sigmoid calibrated on labels could reverse the
    fit's order where the tiers differ least often where the strong tier wins most (Platt's slope
    may be negative), and the order is what routing uses. The probability of the strong tier is
    then that it scores higher, given that the tiers differ.
    """
    start = time.perf_counter()
    if balance_tasks:
        tasks = ds.task_weights()
        sample_weight = tasks if sample_weight is None else sample_weight * tasks
    fit_idx, cal_idx = random_split(len(ds.rows), CALIBRATION_FRACTION, seed)
    fit_idx_a = np.asarray(fit_idx, dtype=np.int64)
    cal_idx_a = np.asarray(cal_idx, dtype=np.int64)
    weight = None if sample_weight is None else sample_weight[fit_idx_a]
    labels = ds.labels[fit_idx_a]
    marks = gain if gain is not None and gain.any() else None
    if marks is not None:
        keep, labels, weight = gain_rows(ds.scores[fit_idx_a], labels, weight,
                                         marks[fit_idx_a])
        fit_idx_a = fit_idx_a[keep]
        if np.unique(labels).size < 2:
            raise InvalidData(f"fitting on the score gain leaves {len(labels)} rows, all of one "
                              "class (one tier never scored higher): fit on labels instead")
    est = fit_candidate(
        candidate,
        ds.X[fit_idx_a],
        labels,
        n_classes=n_classes,
        seed=seed,
        sample_weight=weight,
    )
    X_cal, y_cal = ds.X[cal_idx_a], ds.labels[cal_idx_a]
    if marks is not None:
        keep_cal, y_cal, _ = gain_rows(ds.scores[cal_idx_a], y_cal, None, marks[cal_idx_a])
        X_cal = X_cal[keep_cal]
    cal = calibrate(est, X_cal, y_cal, n_classes=n_classes)
    seconds = time.perf_counter() - start
    logger.info(
        "fitted %s on %d rows (+%d calibration) in %.1fs",
        candidate,
        len(fit_idx_a),
        len(cal_idx_a),
        seconds,
    )
    return Fitted(cal, candidate, cal_idx_a, seconds)


def gain_rows(
    scores: NDArray[np.float64],
    labels: NDArray[np.int64],
    weight: NDArray[np.float64] | None,
    marked: NDArray[np.bool_],
) -> tuple[NDArray[np.bool_], NDArray[np.int64], NDArray[np.float64]]:
    """Fit rows of a two-tier ladder on what the dearer tier gains (``gain`` = strong - weak).

    A marked row whose tiers scored alike says nothing about which tier to pay for: it is left
    out of the fit. Any other marked row is labelled by which tier scored higher, weighted by
    ``|gain|``, so a logistic fit orders prompts by how likely the dearer tier wins where the
    tiers differ. The cheapest-adequate label instead counts every tie as "the cheap tier" and a
    row where the cheap tier did better the same as a tie, which also teaches how often the
    tiers differ at all (what matters on a benchmark of right-or-wrong answers, where "both
    wrong" marks the hardest questions). Which helps depends on the traffic: ``select_fit_rule``.
    Unmarked rows keep their label and weight. Returns the rows kept, their labels and weights.
    """
    if scores.shape[1] != 2:
        raise ValueError(f"gain labels need two tiers, got {scores.shape[1]}")
    w = np.ones(len(labels)) if weight is None else np.asarray(weight, dtype=np.float64)
    d = scores[:, 1] - scores[:, 0]
    keep = ~marked | (d != 0)
    new_labels = np.where(marked, (d > 0).astype(np.int64), labels)
    new_weight = np.where(marked, w * np.abs(d), w)
    return keep, new_labels[keep], new_weight[keep]


def gain_marks(fit: str, complete: NDArray[np.bool_]) -> NDArray[np.bool_] | None:
    """The rows to fit on their score gain under a label rule's ``fit`` (``complete``: rows with
    every tier scored); None when the rule fits labels."""
    return np.asarray(complete, dtype=bool) if fit == "gain" else None


#: Fit rules ``select_fit_rule`` compares (``LabelRule.fit``).
FIT_RULES = ("label", "gain")
#: Fully scored traffic rows below which ``select_fit_rule`` keeps ``label`` without comparing.
FIT_RULE_MIN_ROWS = 100
#: Folds of the traffic rows ``select_fit_rule`` compares the rules on. Five, not three: on
#: LLMRouter's clusters after 300 and 1,000 labels (8 shuffles) three folds picked the worse rule
#: 5 times, five folds 3 times; every other pick, and MMLU-Pro's (label, 4 shuffles), the same.
FIT_RULE_FOLDS = 5


def select_fit_rule(
    ds: Dataset,
    candidate: str,
    seed: int,
    weights: NDArray[np.float64],
    complete: NDArray[np.bool_],
    judged: NDArray[np.int64],
    folds: int = FIT_RULE_FOLDS,
) -> tuple[str, dict[str, Any]]:
    """The fit rule (``label`` or ``gain``) whose fits rank the deployment's own prompts better.

    ``judged`` are the rows of ``ds`` to compare on (traffic with every tier scored), ``complete``
    marks every row with every tier scored (base data and those). Each rule is fitted
    ``folds`` times, each time without one fold of ``judged`` (every other row in, weighted as
    the challenger will be), and the out-of-fold probabilities are pooled: the rule with the
    higher APGR on ``judged`` wins, ``label`` on a tie. Two tiers only; with fewer than
    ``FIT_RULE_MIN_ROWS`` judged rows ``label`` is kept without comparing (a few dozen rows
    cannot tell the rules apart). Returns the rule and what decided it.
    """
    n = len(judged)
    if ds.scores.shape[1] != 2:
        return "label", {"why": "the gain rule needs two tiers"}
    if n < FIT_RULE_MIN_ROWS:
        return "label", {"why": f"{n} fully scored traffic rows (at least {FIT_RULE_MIN_ROWS} "
                                "needed to compare the rules)"}
    held = ds.subset(judged)
    parts = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    apgr: dict[str, float] = {}
    for rule in FIT_RULES:
        proba = np.zeros((n, 2))
        try:
            for part in parts:
                train = np.setdiff1d(np.arange(len(ds.rows)), judged[part])
                fitted = fit_calibrated(ds.subset(train), candidate, 2, seed,
                                        sample_weight=weights[train],
                                        gain=gain_marks(rule, complete[train]))
                proba[part] = predict_proba_full(fitted.estimator, held.X[part], 2)
        except InvalidData:  # the gain rule cannot fit these rows: it cannot win
            apgr[rule] = float("nan")
            continue
        apgr[rule] = gate_metric(build_report(held.scores, held.costs, ["weak", "strong"], proba),
                                 2)
    rule = "gain" if apgr["gain"] > apgr["label"] else "label"
    logger.info("fit rule %s: out-of-fold APGR on %d judged traffic rows %s", rule, n, apgr)
    return rule, {"apgr": apgr, "rows": n, "folds": folds}


def report_on(fitted: Fitted, ds: Dataset, tier_names: Sequence[str]) -> dict[str, Any]:
    """The evaluation report of a fitted router on a dataset."""
    proba = predict_proba_full(fitted.estimator, ds.X, len(tier_names))
    return build_report(ds.scores, ds.costs, tier_names, proba)


def gate_metric(report: dict[str, Any], n_tiers: int) -> float:
    """The figure model choice and promotion optimise: APGR for two tiers, AIQ for more.

    APGR is the field's standard for a weak/strong pair; with three or more tiers the cost axis
    matters, and AIQ integrates quality over it.
    """
    key = "apgr" if n_tiers == 2 else "aiq"
    value = report.get(key)
    return float("nan") if value is None else float(value)


#: The default operating point: the share of the cheapest→top quality gap it must recover.
DEFAULT_TARGET_PGR = 0.8


def knob_for_pgr(
    scores: NDArray[np.float64], costs: NDArray[np.float64], proba: NDArray[np.float64],
    target_pgr: float = DEFAULT_TARGET_PGR,
) -> float:
    """The cheapest knob whose decisions recover ``target_pgr`` of the cheapest→top quality gap
    on these rows (1.0, always the top tier, when no knob does)."""
    weak, strong = scores[:, 0].mean(), scores[:, -1].mean()
    gap = strong - weak
    good = [
        p
        for p in sweep_router(scores, costs, proba)
        if p.knob is not None and (gap <= 0 or (p.quality - weak) / gap >= target_pgr)
    ]
    if not good:
        return 1.0
    best = min(good, key=lambda p: (p.cost, -(p.knob or 0.0)))
    return float(best.knob if best.knob is not None else 1.0)


def default_knob(fitted: Fitted, ds: Dataset, target_pgr: float = DEFAULT_TARGET_PGR) -> float:
    """The bundle's default knob: ``knob_for_pgr`` on the calibration rows (held out from fitting,
    from the training groups).

    Also tried: the same on groups held out of fitting (three seeded folds pooled), meant to
    match new traffic better. On the recipes' unseen groups it overshot the target for both
    two-tier bundles (``routellm_fast`` / ``routellm``: PGR 0.93 / 0.95 at 79% / 89% strong
    calls, against 0.76 / 0.84 at 59% / 74% with this rule), so this rule stayed.
    """
    cal = ds.subset(fitted.cal_idx)
    proba = predict_proba_full(fitted.estimator, cal.X, cal.scores.shape[1])
    return knob_for_pgr(cal.scores, cal.costs, proba, target_pgr)


def select_candidate(
    ds: Dataset,
    candidates: Sequence[str],
    tier_names: Sequence[str],
    seed: int,
    folds: int = SELECTION_FOLDS,
    *,
    balance_tasks: bool = False,
) -> tuple[str, dict[str, dict[str, float]]]:
    """Pick the candidate with the best mean gate metric on groups held out of its training rows.

    Each fold holds out a different seeded 20% of the groups: one split alone is too noisy to
    rank candidates (a few hundred rows need the strong tier in a typical validation split).
    """
    try:
        splits = [
            group_split(list(ds.rows), test_fraction=0.2, seed=seed + 1 + f) for f in range(folds)
        ]
    except InvalidData as exc:  # e.g. one group only
        logger.warning("comparing candidates on random folds, not held-out groups (%s)", exc)
        splits = []
    # a fold whose training rows hold one label (groups that line up with the labels) fits nothing
    splits = [s for s in splits if np.unique(ds.labels[s[0]]).size >= 2]
    if not splits:
        logger.warning("comparing candidates on random folds: no held-out-group fold trains on "
                       "two labels")
        splits = [random_split(len(ds.rows), 0.2, seed + 1 + f) for f in range(folds)]
    table: dict[str, dict[str, float]] = {}
    for name in candidates:
        reps, seconds = [], 0.0
        for train_idx, val_idx in splits:
            fitted = fit_calibrated(
                ds.subset(train_idx), name, len(tier_names), seed, balance_tasks=balance_tasks
            )
            reps.append(report_on(fitted, ds.subset(val_idx), tier_names))
            seconds += fitted.fit_seconds
        table[name] = {
            "gate": float(np.nanmean([gate_metric(r, len(tier_names)) for r in reps])),
            "apgr": float(np.nanmean([np.nan if r["apgr"] is None else r["apgr"] for r in reps])),
            "aiq": float(np.nanmean([np.nan if r["aiq"] is None else r["aiq"] for r in reps])),
            "fit_seconds": seconds / len(splits),
        }
        logger.info("candidate %s: %s", name, table[name])
    best = max(table, key=lambda n: -np.inf if np.isnan(table[n]["gate"]) else table[n]["gate"])
    return best, table
