"""Bootstrap intervals against closed forms: a perfect router's figures as functions of the
resample's share of prompts that need the strong tier."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from training.bootstrap import (
    bootstrap_ci,
    draw_rows,
    mean_ci,
    paired_diff_ci,
    percentile_ci,
    resample_counts,
    resampled_figures,
)
from training.report import build_report

F64 = NDArray[np.float64]


def _perfect(n: int, needs_strong: int) -> tuple[F64, F64, F64]:
    """Rows ``< needs_strong`` are right only on the strong tier, the rest on both; weak $1, strong
    $2 per prompt; the router is certain and right on every row.

    With p the share of rows needing the strong tier: the curve is (share 0, PGR 0) and the oracle
    (share p, PGR 1), so APGR = p/2 + (1 - p) = 1 - p/2, CPT(x) = x p, and over costs [1, 2] the
    hull runs (1, 1-p) → (1+p, 1) then flat: AIQ = 1 - p²/2.
    """
    hard = np.arange(n) < needs_strong
    scores = np.column_stack([np.where(hard, 0.0, 1.0), np.ones(n)])
    costs = np.tile([1.0, 2.0], (n, 1))
    proba = np.column_stack([np.where(hard, 0.0, 1.0), np.where(hard, 1.0, 0.0)])
    return scores, costs, proba


def _closed_form(p: F64) -> dict[str, F64]:
    return {"apgr": 1 - p / 2, "cpt50": 0.5 * p, "cpt80": 0.8 * p, "aiq": 1 - p**2 / 2}


def test_resampled_figures_match_the_closed_form_per_resample() -> None:
    s, c, proba = _perfect(40, 12)
    counts = resample_counts(40, 200, seed=3)
    p = counts[:, :12].sum(axis=1) / 40  # each resample's share of rows needing strong
    assert p.std() > 0.03  # the resamples do differ
    figs = resampled_figures(s, c, proba, counts)
    for metric, expected in _closed_form(p).items():
        np.testing.assert_allclose(figs[metric], expected, atol=1e-12, err_msg=metric)


def test_interval_is_the_percentile_of_the_closed_form() -> None:
    s, c, proba = _perfect(40, 12)
    ci = bootstrap_ci(s, c, proba, resamples=500, seed=7)
    p = resample_counts(40, 500, seed=7)[:, :12].sum(axis=1) / 40
    for metric, expected in _closed_form(p).items():
        lo, hi = np.percentile(expected, [2.5, 97.5])
        assert ci[metric] == pytest.approx([lo, hi], abs=1e-12), metric
    # p = 0.3 on the full set: APGR 0.85; p's sd is sqrt(0.3 * 0.7 / 40) = 0.072, so APGR's 95%
    # interval is about 0.85 ± 1.96 * 0.036 = ±0.071
    apgr = ci["apgr"]
    assert apgr is not None and apgr[0] < 0.85 < apgr[1] and 0.11 < apgr[1] - apgr[0] < 0.17


def test_identical_rows_collapse_the_interval_to_the_point() -> None:
    # every row needs the strong tier (p = 1 in every resample): the interval is the point value
    s, c, proba = _perfect(40, 40)
    rep = build_report(s, c, ["weak", "strong"], proba)
    ci = bootstrap_ci(s, c, proba, resamples=50, seed=0)
    for metric, point in _closed_form(np.array(1.0)).items():
        assert rep[metric] == pytest.approx(float(point), abs=1e-12), metric
        assert ci[metric] == pytest.approx([float(point)] * 2, abs=1e-12), metric


def test_all_ones_weights_reproduce_build_report_on_noisy_three_tiers() -> None:
    rng = np.random.default_rng(0)
    n = 300
    s = rng.random((n, 3)) * np.array([0.6, 0.8, 1.0])
    c = rng.random((n, 1)) * np.array([1.0, 3.0, 9.0]) + 0.1
    proba = rng.dirichlet(np.ones(3), size=n)
    rep = build_report(s, c, ["a", "b", "c"], proba)
    figs = resampled_figures(s, c, proba, np.ones((1, n), dtype=np.int64))
    for metric in ("apgr", "cpt50", "cpt80", "aiq"):
        expected = np.nan if rep[metric] is None else rep[metric]
        np.testing.assert_allclose(figs[metric], [expected], atol=1e-9, err_msg=metric)


def test_seeded_intervals_are_deterministic_and_contain_the_point() -> None:
    rng = np.random.default_rng(1)
    n = 400
    s = (rng.random((n, 2)) < np.array([0.5, 0.75])).astype(np.float64)
    c = np.tile([1.0, 3.0], (n, 1))
    proba = rng.dirichlet(np.ones(2), size=n)
    rep = build_report(s, c, ["weak", "strong"], proba)
    first = bootstrap_ci(s, c, proba, resamples=300, seed=11)
    assert bootstrap_ci(s, c, proba, resamples=300, seed=11) == first
    assert bootstrap_ci(s, c, proba, resamples=300, seed=12) != first
    for metric, bounds in first.items():
        assert bounds is not None and bounds[0] < rep[metric] < bounds[1], metric


def test_resamples_extend_with_the_same_seed() -> None:
    np.testing.assert_array_equal(resample_counts(30, 10, 5), resample_counts(30, 25, 5)[:10])
    assert (resample_counts(30, 10, 5).sum(axis=1) == 30).all()


def test_bad_counts_are_rejected() -> None:
    s, c, proba = _perfect(10, 3)
    with pytest.raises(ValueError, match="counts"):
        resampled_figures(s, c, proba, np.ones((2, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="resamples"):
        resample_counts(10, 0, 0)


def test_paired_difference_of_a_router_with_itself_is_zero() -> None:
    scores, costs, proba = _perfect(200, 60)
    noisy = np.clip(proba + np.random.default_rng(0).normal(0, 0.4, proba.shape), 0.01, 1)
    noisy /= noisy.sum(axis=1, keepdims=True)
    assert paired_diff_ci(scores, costs, noisy, noisy, "apgr", resamples=50) == [0.0, 0.0]


def test_paired_difference_of_perfect_minus_always_weak() -> None:
    # B = the perfect router, A = one that always says weak: A's APGR is 0.5 (its curve is the
    # straight line from always-weak to always-strong), B's is 1 - p/2, so B - A = 0.5 - p/2
    scores, costs, proba = _perfect(100, 30)
    weak = np.tile([1.0, 0.0], (100, 1))
    ci = paired_diff_ci(scores, costs, weak, proba, "apgr", resamples=200, seed=3)
    counts = resample_counts(100, 200, 3)
    p = counts[:, :30].sum(axis=1) / 100
    expected = np.percentile(0.5 - p / 2, [2.5, 97.5])
    assert ci is not None and ci == pytest.approx(list(expected), abs=1e-9)
    assert ci[0] > 0  # the better router is better on every resample
    with pytest.raises(ValueError, match="metric"):
        paired_diff_ci(scores, costs, weak, proba, "accuracy")


def test_mean_ci_is_the_percentile_interval_of_the_resampled_means() -> None:
    values = np.random.default_rng(1).random(50)
    rows = draw_rows(50, 400, np.random.default_rng(9))
    assert rows.shape == (400, 50) and rows.min() >= 0 and rows.max() < 50
    lo, hi = mean_ci(values, rows)
    assert [lo, hi] == list(np.percentile(values[rows].mean(axis=1), [2.5, 97.5]))
    assert lo < values.mean() < hi
    # seeded: the same generator state draws the same rows, hence the same interval
    assert mean_ci(values, draw_rows(50, 400, np.random.default_rng(9))) == [lo, hi]
    assert mean_ci(np.full(7, 0.25), draw_rows(7, 50, np.random.default_rng(0))) == [0.25, 0.25]
    assert percentile_ci(np.arange(201.0)) == [5.0, 195.0]
