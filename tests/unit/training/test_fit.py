"""Candidate fitting on small seeded numeric matrices: k columns, absent-class padding, weights."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from router_model.encoder import EMBEDDING_DIM
from router_model.features import HAND_FEATURE_NAMES
from training.fit import (
    CANDIDATES,
    HARDER_WITH,
    KNN_COMPONENTS,
    fit_candidate,
    monotone_constraints,
    predict_proba_full,
)

FULL_WIDTH = len(HAND_FEATURE_NAMES) + EMBEDDING_DIM


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    # HistGradientBoosting's OpenMP threads spin on a busy 2-core runner: a 300-row fit took
    # 0.1 s alone and 5-20 s beside other test jobs. One thread keeps these tests fast.
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def make_data(n: int, d: int, k: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """A seeded matrix whose labels depend on the first columns (so every model learns)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    logits = X[:, :k] * 2.0 + rng.gumbel(size=(n, k))
    return X, np.argmax(logits, axis=1).astype(np.int64)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_candidate_gives_k_columns_summing_to_one(name: str, k: int) -> None:
    X, y = make_data(300, FULL_WIDTH, k, seed=k)  # the shipped layout (gbt_pca splits on it)
    est = fit_candidate(name, X, y, n_classes=k, seed=0)
    proba = predict_proba_full(est, X[:50], k)
    assert proba.shape == (50, k)
    assert proba.dtype == np.float64
    # float32 features give float32 probabilities for some estimators
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba >= 0).all()


@pytest.mark.parametrize("name", ["logreg", "gbt"])
def test_same_seed_same_model(name: str) -> None:
    X, y = make_data(200, 8, 3, seed=1)
    a = predict_proba_full(fit_candidate(name, X, y, n_classes=3, seed=7), X, 3)
    b = predict_proba_full(fit_candidate(name, X, y, n_classes=3, seed=7), X, 3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("absent", [0, 1, 2])
def test_absent_class_is_padded_with_zeros(absent: int) -> None:
    X, y = make_data(300, 8, 3, seed=2)
    y = np.where(y == absent, (absent + 1) % 3, y)
    est = fit_candidate("logreg", X, y, n_classes=3, seed=0)
    proba = predict_proba_full(est, X, 3)
    assert proba.shape == (300, 3)
    assert (proba[:, absent] == 0.0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_two_classes_of_four_give_four_columns() -> None:
    X, y = make_data(200, 8, 2, seed=3)
    est = fit_candidate("gbt", X, y * 3, n_classes=4, seed=0)  # labels {0, 3}
    proba = predict_proba_full(est, X, 4)
    assert proba.shape == (200, 4)
    assert (proba[:, 1:3] == 0.0).all()


def test_sample_weight_changes_the_fit() -> None:
    X, y = make_data(300, 8, 2, seed=4)
    heavy = np.where(y == 1, 10.0, 1.0)
    plain = predict_proba_full(fit_candidate("logreg", X, y, n_classes=2, seed=0), X, 2)
    weighted = predict_proba_full(
        fit_candidate("logreg", X, y, n_classes=2, seed=0, sample_weight=heavy), X, 2
    )
    assert weighted[:, 1].mean() > plain[:, 1].mean() + 0.05


@pytest.mark.parametrize("name", ["gbt", "mlp"])
def test_sample_weight_accepted(name: str) -> None:
    X, y = make_data(200, 8, 3, seed=5)
    est = fit_candidate(name, X, y, n_classes=3, seed=0, sample_weight=np.ones(200))
    assert predict_proba_full(est, X, 3).shape == (200, 3)


def test_knn_ignores_weights_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    X, y = make_data(200, 8, 2, seed=6)
    with caplog.at_level(logging.WARNING, logger="training.fit"):
        est = fit_candidate("knn", X, y, n_classes=2, seed=0, sample_weight=np.ones(200))
    assert "ignores sample weights" in caplog.text
    assert predict_proba_full(est, X, 2).shape == (200, 2)


def test_knn_projects_to_few_dims() -> None:
    X, y = make_data(300, 60, 2, seed=7)
    est = fit_candidate("knn", X, y, n_classes=2, seed=0)
    assert est.named_steps["pca"].n_components_ == KNN_COMPONENTS


def test_a_class_with_one_row_still_fits() -> None:
    X, y = make_data(300, 8, 2, seed=8)
    y[0] = 2  # one row of class 2: early stopping cannot stratify it
    for name in ("gbt", "mlp"):
        proba = predict_proba_full(fit_candidate(name, X, y, n_classes=3, seed=0), X, 3)
        assert proba.shape == (300, 3)


def test_rejects_bad_input() -> None:
    X, y = make_data(50, 4, 2, seed=9)
    with pytest.raises(KeyError):
        fit_candidate("svm", X, y, n_classes=2, seed=0)
    with pytest.raises(ValueError, match="lie in"):
        fit_candidate("logreg", X, y + 1, n_classes=2, seed=0)
    with pytest.raises(ValueError, match="two classes"):
        fit_candidate("logreg", X, np.zeros(50, dtype=np.int64), n_classes=2, seed=0)
    with pytest.raises(ValueError, match="disagree"):
        fit_candidate("logreg", X[:10], y, n_classes=2, seed=0)
    est = fit_candidate("logreg", X, y + 1, n_classes=3, seed=0)
    with pytest.raises(ValueError, match="exceed"):
        predict_proba_full(est, X, 2)


def test_gbt_mono_never_lowers_the_dearer_tier_as_a_harder_feature_grows() -> None:
    # enough rows for gbt_mono's large leaves (200 rows at least)
    X, y = make_data(2000, FULL_WIDTH, 2, seed=10)
    # the label rises with log_numbers and falls with log_tokens: the constraint must hold anyway
    numbers = HAND_FEATURE_NAMES.index("log_numbers")
    tokens = HAND_FEATURE_NAMES.index("log_tokens")
    y = (X[:, numbers] - X[:, tokens] + np.random.default_rng(0).normal(size=2000) > 0).astype(
        np.int64
    )
    mono = fit_candidate("gbt_mono", X, y, n_classes=2, seed=0)
    free = fit_candidate("gbt", X, y, n_classes=2, seed=0)
    grid = np.linspace(-3, 3, 13, dtype=np.float32)
    drops = {"gbt_mono": 0.0, "gbt": 0.0}
    for name in HARDER_WITH:
        col = HAND_FEATURE_NAMES.index(name)
        for est, key in ((mono, "gbt_mono"), (free, "gbt")):
            rows = np.repeat(X[:40], len(grid), axis=0)
            rows[:, col] = np.tile(grid, 40)
            p = predict_proba_full(est, rows, 2)[:, 1].reshape(40, len(grid))
            drops[key] = max(drops[key], float(-np.diff(p, axis=1).min()))
    assert drops["gbt_mono"] <= 1e-12
    assert drops["gbt"] > 0.05  # the same data without the constraint does fall: the test can fail
    # the constraint costs the falling column, not the rising one
    assert mono.score(X, y) > 0.6


def test_monotone_constraints_cover_the_hand_columns_only() -> None:
    cst = monotone_constraints(FULL_WIDTH)
    assert len(cst) == FULL_WIDTH and set(cst[len(HAND_FEATURE_NAMES):]) == {0}
    assert [HAND_FEATURE_NAMES[i] for i, c in enumerate(cst) if c] == [
        n for n in HAND_FEATURE_NAMES if n in HARDER_WITH
    ]
    assert set(HARDER_WITH) <= set(HAND_FEATURE_NAMES)
    with pytest.raises(ValueError, match="hand-made features first"):
        fit_candidate("gbt_mono", *make_data(100, 8, 2, seed=11), n_classes=2, seed=0)


def test_gbt_mono_on_three_classes_fits_unconstrained(caplog: pytest.LogCaptureFixture) -> None:
    X, y = make_data(300, FULL_WIDTH, 3, seed=12)
    with caplog.at_level(logging.INFO, logger="training.fit"):
        est = fit_candidate("gbt_mono", X, y, n_classes=3, seed=0)
    assert "without monotone constraints" in caplog.text
    assert est.monotonic_cst is None
