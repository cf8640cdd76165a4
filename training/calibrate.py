"""Probability calibration on a held-out split, and the calibration figures we report.

Calibration is ``CalibratedClassifierCV(FrozenEstimator(est), method="sigmoid")`` (Platt scaling
per class, renormalised), fitted only on rows the estimator was not trained on.

Why sigmoid at every size, not isotonic above ~1k rows:

- isotonic output is piecewise constant, so many prompts share one probability and a threshold
  cannot hit a target strong-call share between them;
- skl2onnx exports isotonic as a nearest-threshold lookup, not scikit-learn's linear
  interpolation, so the 1e-5 parity check of ``training.export`` fails;
- ``"temperature"`` picks logits or ``log(proba)`` by inspecting the values at predict time, a
  data-dependent branch an ONNX graph does not reproduce.

Sigmoid has 2 parameters per class, converts exactly (``training.export``), and keeps the ranking
of every class's score.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from router_model.policy import adequacy
from training.fit import Estimator

logger = logging.getLogger(__name__)

#: The calibration methods ``training.export`` converts with parity.
METHODS = ("sigmoid",)


def _cover_classes(
    known: NDArray[np.int64], X: NDArray[np.float32], y: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float64] | None]:
    """Add one zero-weight row per class the estimator knows but ``y`` lacks.

    scikit-learn refuses a calibration set missing one of the estimator's classes. A zero-weight
    row lets it fit that class's Platt curve on the remaining rows (all negatives: the class gets
    a small probability) and leaves every other class's fit exactly as without the row.
    """
    missing = np.setdiff1d(known, y)
    if missing.size == 0:
        return X, y, None
    logger.warning(
        "calibration rows lack classes %s; calibrating them as never seen", missing.tolist()
    )
    X_out = np.concatenate([X, np.repeat(X[:1], missing.size, axis=0)])
    y_out = np.concatenate([y, missing.astype(np.int64)])
    weight = np.concatenate([np.ones(len(y)), np.zeros(missing.size)])
    return X_out, y_out, weight


def calibrate(
    est: Estimator,
    X_cal: NDArray[np.float32],
    y_cal: NDArray[np.int64],
    *,
    n_classes: int,
    method: str | None = None,
) -> Estimator:
    """Calibrate a fitted estimator on held-out rows; returns a ``CalibratedClassifierCV``.

    Its ``classes_`` are the estimator's. Rows of a class the estimator never saw are dropped
    (it cannot score that class); a class the estimator knows but ``y_cal`` lacks is calibrated
    as never seen. ``method=None`` is ``"sigmoid"``.

    Raises:
        ValueError: an unsupported method, mismatched shapes, labels outside
            ``[0, n_classes)``, or no usable calibration row.
    """
    method = method or "sigmoid"
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} does not export to ONNX; use {METHODS}")
    y_cal = np.asarray(y_cal, dtype=np.int64)
    if X_cal.ndim != 2 or X_cal.shape[0] != y_cal.shape[0]:
        raise ValueError(f"X_cal {X_cal.shape} and y_cal {y_cal.shape} disagree")
    if y_cal.size and (y_cal.min() < 0 or y_cal.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    known = np.asarray(est.classes_, dtype=np.int64)
    keep = np.isin(y_cal, known)
    if not keep.all():
        logger.warning(
            "dropped %d calibration rows of classes the estimator never saw", int((~keep).sum())
        )
    if not keep.any():
        raise ValueError("no calibration row of a class the estimator knows")
    X_fit, y_fit, weight = _cover_classes(known, X_cal[keep], y_cal[keep])
    # The estimator is frozen, so cross-validation folds would all predict with the same model:
    # one split whose test part is every row gives the same predictions without requiring each
    # class to fill every fold (StratifiedKFold's minimum of 5 rows per class).
    rows = np.arange(len(y_fit))
    cal = CalibratedClassifierCV(FrozenEstimator(est), method=method, cv=[(rows, rows)])
    with warnings.catch_warnings():
        # the weights are meant for the calibrator only, which is what this warning says happens
        warnings.filterwarnings(
            "ignore", message=".*does not appear to accept sample_weight", category=UserWarning
        )
        cal.fit(X_fit, y_fit, sample_weight=weight)
    return cal


def calibration_error(proba: NDArray[np.floating], y: NDArray[np.int64], n_bins: int = 10) -> float:
    """Mean expected calibration error of the cumulative adequacies ``P(y <= j)``, ``j < k-1``.

    Decisions threshold ``adequacy(proba)[:, j]`` (tier ``j`` or a cheaper one suffices), so that is
    the probability whose calibration matters. For each ``j`` the ECE is ``sum_b |B|/n *
    |mean(p in B) - share(y <= j in B)|`` over ``n_bins`` equal-width bins of ``[0, 1]``; the
    figure is their mean (for two tiers, the ECE of ``P(tier 0 is adequate)``).

    Raises:
        ValueError: shapes disagree, fewer than two classes, or no rows.
    """
    p, labels = _check(proba, y)
    cum = adequacy(p)
    bins = np.clip((cum * n_bins).astype(np.int64), 0, n_bins - 1)
    errors = []
    for j in range(p.shape[1] - 1):
        hit = (labels <= j).astype(np.float64)
        gap = np.bincount(bins[:, j], weights=cum[:, j] - hit, minlength=n_bins)
        errors.append(float(np.abs(gap).sum() / len(labels)))
    return float(np.mean(errors))


def brier(proba: NDArray[np.floating], y: NDArray[np.int64]) -> float:
    """Multi-class Brier score: mean over rows of ``sum_j (p_j - [y == j])^2``, in ``[0, 2]``.

    Raises:
        ValueError: shapes disagree, fewer than two classes, or no rows.
    """
    p, labels = _check(proba, y)
    onehot = np.eye(p.shape[1])[labels]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _check(
    proba: NDArray[np.floating], y: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    p = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] != labels.shape[0] or p.shape[0] == 0:
        raise ValueError(f"proba {p.shape} and y {labels.shape}: need (n, k>=2) and (n,), n > 0")
    if labels.min() < 0 or labels.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1]})")
    return p, labels
