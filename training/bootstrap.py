"""Bootstrap 95% confidence intervals: the percentile interval every report uses (``percentile_ci``,
``mean_ci`` for a mean), and paired intervals of a router's APGR, CPT(50%), CPT(80%) and AIQ.

A resample draws the evaluation rows with replacement. Every figure of that resample (the router's
curve, the always-weak/always-strong qualities PGR is measured against, the AIQ cost range) is
recomputed on the same drawn rows, so the interval reflects the paired comparison the report makes.
Row multiplicities are applied as weights in a few matrix products per chunk of resamples; the
figures themselves come from ``training.evaluate``'s own functions, so a resample is measured
exactly as ``build_report`` measures the full set (with all weights 1 the two agree; tested).

Two simplifications against ``build_report``, both documented where they apply:

- the knob grid is the full set's (``sweep_router``'s), not re-derived per resample; with at most
  ``MAX_SWEEP_POINTS`` knobs it already traces every distinct point of a small set's curve;
- the AIQ cost range is the span of the router's and the fixed tiers' points; the oracle's curve is
  not re-traced per resample (its ends are fixed routings' costs in every shipped report).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.ab_stats import percentile_ci
from router_model.policy import choose_tiers
from training.evaluate import (
    F64,
    Frame,
    axis_figures,
    check_outcomes,
    cost_share,
    sweep_router,
)

logger = logging.getLogger(__name__)

#: Resamples of a reported interval: Monte Carlo error of a 95% percentile bound is ~0.005 APGR
#: on the unseen split at this count, a tenth of the interval's half-width.
DEFAULT_RESAMPLES = 1000
METRICS = ("apgr", "cpt50", "cpt80", "aiq")
#: Resamples whose weights are multiplied at once (bounds memory at ~chunk x n floats).
_CHUNK = 100
__all__ = ["bootstrap_ci", "draw_rows", "mean_ci", "paired_diff_ci", "percentile_ci",
           "resample_counts", "resampled_figures"]


def draw_rows(n: int, resamples: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """``(resamples, n)`` row indices drawn with replacement, one resample per row, from ``rng``."""
    return rng.integers(0, n, (resamples, n))


def mean_ci(values: F64, rows: NDArray[np.int64]) -> list[float]:
    """Percentile bootstrap 95% interval of the mean of ``values`` (non-empty).

    ``rows`` is ``(resamples, n)`` indices as ``draw_rows`` gives; passing the same ``rows`` for
    several figures of the same requests makes their intervals paired.
    """
    return percentile_ci(np.asarray(values, dtype=np.float64)[rows].mean(axis=1))


def resample_counts(n: int, resamples: int, seed: int) -> NDArray[np.int64]:
    """``(resamples, n)`` multiplicity of each row in each resample (rows drawn with replacement).

    Resample ``r`` draws from its own child of ``SeedSequence(seed)``, so it is the same whatever
    the total count: 1000 resamples extend 100 with the same seed.

    Raises:
        ValueError: when ``n`` or ``resamples`` is below 1.
    """
    if n < 1 or resamples < 1:
        raise ValueError(f"need n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    out = np.empty((resamples, n), dtype=np.int64)
    for r, child in enumerate(np.random.SeedSequence(seed).spawn(resamples)):
        out[r] = np.bincount(np.random.default_rng(child).integers(0, n, n), minlength=n)
    return out


def _curve_figures(cost: F64, quality: F64, shares: F64, fixed: tuple[F64, F64]) -> dict[str, Any]:
    """One resample's figures from its curve (per knob) and fixed-tier (cost, quality) rows: the
    same share axis as ``curve_point`` gives, measured as ``curve_figures`` measures it."""
    fixed_cost, fixed_quality = fixed
    span = (float(fixed_cost[0]), float(fixed_cost[-1]))
    x = shares[:, -1] if shares.shape[1] == 2 else cost_share(cost, shares[:, -1], span)
    frame = Frame(
        float(fixed_quality[0]),
        float(fixed_quality[-1]),
        float(min(cost.min(), fixed_cost.min())),
        float(max(cost.max(), fixed_cost.max())),
    )
    return axis_figures(x, cost, quality, frame, single=False)


def resampled_figures(
    scores: F64, costs: F64, proba: F64, counts: NDArray[np.int64]
) -> dict[str, F64]:
    """Each metric of ``METRICS`` per resample, NaN where undefined in that resample.

    ``counts`` is ``(resamples, n)`` row multiplicities, as ``resample_counts`` returns.

    Raises:
        ValueError: on malformed inputs, or counts that are not ``(resamples, n)`` and non-negative
            with a positive total per resample.
    """
    s, c = check_outcomes(scores, costs)
    n, k = s.shape
    w = np.asarray(counts)
    if w.ndim != 2 or w.shape[1] != n or (w < 0).any() or (w.sum(axis=1) <= 0).any():
        raise ValueError(f"counts must be (resamples, {n}) non-negative with positive row sums")
    grid = [float(p.knob) for p in sweep_router(s, c, proba) if p.knob is not None]
    choice = np.stack([choose_tiers(np.asarray(proba, dtype=np.float64), q) for q in grid])
    rows = np.arange(n)
    # per knob and row: the chosen tier's score and cost, and one column block per tier's indicator
    per_row = np.concatenate(
        [s[rows, choice], c[rows, choice], *[(choice == j).astype(np.float64) for j in range(k)]]
    ).T
    n_knobs = len(grid)
    out = {m: np.full(len(w), np.nan) for m in METRICS}
    for start in range(0, len(w), _CHUNK):
        wc = w[start : start + _CHUNK].astype(np.float64)
        wc /= wc.sum(axis=1, keepdims=True)
        mixed = wc @ per_row  # (chunk, knobs * (2 + k)): weighted means per knob
        fixed_q, fixed_c = wc @ s, wc @ c
        for i in range(len(wc)):
            quality, cost = mixed[i, :n_knobs], mixed[i, n_knobs : 2 * n_knobs]
            shares = mixed[i, 2 * n_knobs :].reshape(k, n_knobs).T
            figs = _curve_figures(cost, quality, shares, (fixed_c[i], fixed_q[i]))
            for m in METRICS:
                if figs[m] is not None:
                    out[m][start + i] = figs[m]
    return out


def bootstrap_ci(
    scores: F64,
    costs: F64,
    proba: F64,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """Percentile 95% intervals ``{metric: [lo, hi]}`` of the router's figures over resamples.

    Resamples where a figure is undefined (no weak/strong gap, a CPT target never reached) are
    left out of that figure's interval and logged; a figure undefined in every resample is None.

    Raises:
        ValueError: on malformed inputs or ``resamples < 1``.
    """
    s, _ = check_outcomes(scores, costs)
    figs = resampled_figures(scores, costs, proba, resample_counts(len(s), resamples, seed))
    ci: dict[str, list[float] | None] = {}
    for m in METRICS:
        vals = figs[m][np.isfinite(figs[m])]
        if vals.size < resamples:
            dropped = resamples - vals.size
            logger.warning("%s undefined in %d of %d resamples", m, dropped, resamples)
        ci[m] = percentile_ci(vals) if vals.size else None
    return ci


def paired_diff_ci(
    scores: F64,
    costs: F64,
    proba_a: F64,
    proba_b: F64,
    metric: str,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[float] | None:
    """95% interval of ``metric`` of router B minus router A, both measured on each resample.

    The same drawn rows score both routers (a paired comparison), so the interval is much
    narrower than the two routers' own intervals would suggest when their errors are correlated.
    None when the metric is undefined in every resample.

    Raises:
        ValueError: on malformed inputs, an unknown ``metric`` or ``resamples < 1``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    s, _ = check_outcomes(scores, costs)
    counts = resample_counts(len(s), resamples, seed)
    a = resampled_figures(scores, costs, proba_a, counts)[metric]
    b = resampled_figures(scores, costs, proba_b, counts)[metric]
    diff = (b - a)[np.isfinite(a) & np.isfinite(b)]
    return percentile_ci(diff) if diff.size else None
