"""Task balancing: every task (group prefix before '/') gets the same total weight in fitting."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import LabeledRow
from training.dataset import Dataset
from training.fit import predict_proba_full
from training.pipeline import fit_calibrated


def dataset(groups: list[str], X: np.ndarray, labels: np.ndarray) -> Dataset:
    n = len(groups)
    rows = tuple(
        LabeledRow(prompt=f"p{i}", scores={"a": 1.0, "b": 1.0}, group=g or None)
        for i, g in enumerate(groups)
    )
    return Dataset(
        rows=rows,
        X=X.astype(np.float32),
        n_tokens=np.full(n, 10, dtype=np.int64),
        scores=np.stack([1.0 - labels, np.ones(n)], axis=1).astype(np.float64),
        costs=np.tile([1.0, 10.0], (n, 1)),
        labels=labels.astype(np.int64),
        skipped=0,
    )


def test_weights_by_hand() -> None:
    # tasks: mmlu x3, gsm8k x1, no group x2; 6 rows over 3 tasks -> each task totals 2
    groups = ["mmlu/a", "mmlu/b", "mmlu/a", "gsm8k", "", ""]
    w = dataset(groups, np.zeros((6, 1)), np.zeros(6)).task_weights()
    np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0])
    assert w.mean() == pytest.approx(1.0)


def test_one_task_keeps_unit_weights() -> None:
    w = dataset(["mmlu/a", "mmlu/b", "mmlu/c"], np.zeros((3, 1)), np.zeros(3)).task_weights()
    np.testing.assert_allclose(w, 1.0)


def test_balancing_lets_a_small_task_count() -> None:
    # the top tier is needed for high x0 in a big task and for high x1 in a small one (1/9 of
    # the rows); unbalanced, x0 dominates the ranking, so the small task's rows rank poorly
    rng = np.random.default_rng(0)
    n_big, n_small = 900, 100
    X = rng.normal(size=(n_big + n_small, 2))
    small = np.r_[np.zeros(n_big, dtype=bool), np.ones(n_small, dtype=bool)]
    signal = np.where(small, X[:, 1], X[:, 0])
    labels = (signal + 0.3 * rng.normal(size=signal.size) > 0).astype(np.int64)
    ds = dataset(["big/a"] * n_big + ["small"] * n_small, X, labels)

    def auc_on_small(balance: bool) -> float:
        fitted = fit_calibrated(ds, "logreg", 2, seed=0, balance_tasks=balance)
        p = predict_proba_full(fitted.estimator, ds.X[small], 2)[:, 1]
        y = labels[small]
        pos, neg = p[y == 1], p[y == 0]
        return float((pos[:, None] > neg[None, :]).mean())

    plain, balanced = auc_on_small(False), auc_on_small(True)
    assert balanced > plain + 0.05, (plain, balanced)
