"""Calibration on held-out rows, missing classes, and the ECE/Brier figures on hand examples."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from training.calibrate import brier, calibrate, calibration_error
from training.fit import fit_candidate, predict_proba_full


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    # HistGradientBoosting's OpenMP threads spin on a busy 2-core runner: a 300-row fit took
    # 0.1 s alone and 5-20 s beside other test jobs. One thread keeps these tests fast.
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def make_data(n: int, k: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10)).astype(np.float32)
    logits = X[:, :k] * 2.0 + rng.gumbel(size=(n, k))
    return X, np.argmax(logits, axis=1).astype(np.int64)


@pytest.mark.parametrize("k", [2, 3])
def test_calibrated_probabilities_sum_to_one(k: int) -> None:
    X_fit, y_fit = make_data(400, k, seed=1)
    X_cal, y_cal = make_data(200, k, seed=2)  # a separate draw: never training rows
    assert not np.isin(X_cal[:, 0], X_fit[:, 0]).any()
    est = fit_candidate("logreg", X_fit, y_fit, n_classes=k, seed=0)
    cal = calibrate(est, X_cal, y_cal, n_classes=k)
    proba = predict_proba_full(cal, X_fit, k)
    assert proba.shape == (400, k)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert cal.method == "sigmoid"
    assert cal.calibrated_classifiers_[0].estimator.estimator is est  # frozen, not refitted


def test_calibration_shrinks_an_overconfident_model() -> None:
    # fitting on few rows with many noise columns makes the model overconfident
    X_fit, y_fit = make_data(60, 2, seed=3)
    X_cal, y_cal = make_data(600, 2, seed=4)
    X_test, y_test = make_data(2000, 2, seed=5)
    est = fit_candidate("gbt", X_fit, y_fit, n_classes=2, seed=0)
    cal = calibrate(est, X_cal, y_cal, n_classes=2)
    before = brier(predict_proba_full(est, X_test, 2), y_test)
    after = brier(predict_proba_full(cal, X_test, 2), y_test)
    assert after < before


def test_calibration_split_lacking_a_class() -> None:
    X_fit, y_fit = make_data(300, 3, seed=6)
    X_cal, y_cal = make_data(100, 3, seed=7)
    keep = y_cal != 2
    est = fit_candidate("logreg", X_fit, y_fit, n_classes=3, seed=0)
    cal = calibrate(est, X_cal[keep], y_cal[keep], n_classes=3)
    proba = predict_proba_full(cal, X_cal, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    # never seen among the calibration rows: a small, non-zero probability
    assert 0.0 < proba[:, 2].max() < 0.1


def test_calibration_rows_of_an_unseen_class_are_dropped() -> None:
    X_fit, y_fit = make_data(300, 2, seed=8)  # the estimator knows classes {0, 1}
    X_cal, y_cal = make_data(200, 3, seed=9)  # calibration rows also hold class 2
    est = fit_candidate("logreg", X_fit, y_fit, n_classes=3, seed=0)
    cal = calibrate(est, X_cal, y_cal, n_classes=3)
    assert cal.classes_.tolist() == [0, 1]
    assert (predict_proba_full(cal, X_cal, 3)[:, 2] == 0.0).all()


def test_calibrate_rejects_other_methods_and_bad_rows() -> None:
    X, y = make_data(100, 2, seed=10)
    est = fit_candidate("logreg", X, y, n_classes=2, seed=0)
    with pytest.raises(ValueError, match="ONNX"):
        calibrate(est, X, y, n_classes=2, method="isotonic")
    with pytest.raises(ValueError, match="disagree"):
        calibrate(est, X[:5], y, n_classes=2)
    with pytest.raises(ValueError, match="no calibration row"):
        calibrate(est, X[:3], np.array([2, 2, 2]), n_classes=3)


def test_ece_two_classes_by_hand() -> None:
    # adequacy P(y <= 0) = proba[:, 0]: 0.15, 0.15 fall in bin 1; 0.85, 0.95 in bins 8 and 9
    proba = np.array([[0.15, 0.85], [0.15, 0.85], [0.85, 0.15], [0.95, 0.05]])
    y = np.array([0, 1, 0, 1])
    # bin 1: mean 0.15, hit share 1/2 -> 2/4 * 0.35; bin 8: |0.85 - 1| = 0.15 -> 1/4 * 0.15;
    # bin 9: |0.95 - 0| -> 1/4 * 0.95
    expected = 0.5 * 0.35 + 0.25 * 0.15 + 0.25 * 0.95
    assert calibration_error(proba, y) == pytest.approx(expected)


def test_ece_three_classes_averages_the_cumulative_adequacies() -> None:
    proba = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    y = np.array([1, 0])
    # j=0: P(y<=0) = 0.2 (hit 0, bin 2), 0.6 (hit 1, bin 6): (0.2 + 0.4) / 2 = 0.3
    # j=1: P(y<=1) = 0.5 (hit 1, bin 5), 0.8 (hit 1, bin 8): (0.5 + 0.2) / 2 = 0.35
    assert calibration_error(proba, y) == pytest.approx((0.3 + 0.35) / 2)


def test_perfect_and_hopeless_figures() -> None:
    proba = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert calibration_error(proba, np.array([0, 2])) == pytest.approx(0.0)
    assert brier(proba, np.array([0, 2])) == pytest.approx(0.0)
    assert brier(proba, np.array([2, 0])) == pytest.approx(2.0)
    assert brier(np.array([[0.5, 0.5]]), np.array([1])) == pytest.approx(0.5)


def test_figures_reject_bad_shapes() -> None:
    with pytest.raises(ValueError):
        brier(np.ones((2, 2)) / 2, np.array([0]))
    with pytest.raises(ValueError):
        calibration_error(np.ones((1, 2)) / 2, np.array([2]))
