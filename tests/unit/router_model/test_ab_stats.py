"""The A/B statistics shared by ``tierwise ab-report`` and the dashboard, on hand examples."""

from __future__ import annotations

import numpy as np
import pytest

from router_model.ab_stats import (
    Sample,
    bootstrap_diff,
    mean_ci,
    permutation_p,
    quality_of,
    too_few,
)


def test_difference_of_means_and_ci_hand_example() -> None:
    a = Sample.of([0.0, 0.0, 1.0, 1.0])  # mean 0.5
    b = Sample.of([1.0, 1.0, 1.0, 0.0])  # mean 0.75
    d = bootstrap_diff(a, b, seed=1)
    assert d.diff == pytest.approx(0.25)
    assert d.lo <= 0.25 <= d.hi and -1.0 <= d.lo and d.hi <= 1.0
    assert bootstrap_diff(a, b, seed=1) == d  # seeded: the same numbers every run


def test_constant_samples_have_a_zero_width_ci() -> None:
    d = bootstrap_diff(Sample.of(np.full(5, 2.0)), Sample.of(np.full(7, 3.0)), seed=0)
    assert (d.diff, d.lo, d.hi) == (1.0, 1.0, 1.0)


def test_permutation_p_value() -> None:
    rng = np.random.default_rng(0)
    same = Sample.of([0.0, 1.0, 0.0, 1.0])
    # identical samples: every shuffle is at least as extreme -> p = 1
    assert permutation_p(same, same, rng, 200) == 1.0
    # fully separated groups of 6: only 2 of C(12, 6) = 924 splits are as extreme, p ~ 0.002
    p = permutation_p(Sample.of(np.zeros(6)), Sample.of(np.ones(6)), rng, 2000)
    assert p < 0.01
    with pytest.raises(ValueError):
        bootstrap_diff(Sample.of([]), same, seed=0)


def test_rows_and_counted_rows_give_the_same_numbers() -> None:
    """A GROUP BY's (value, count) rows are the same sample as the rows themselves."""
    rows = [0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 0.5, 1.0]
    counted = Sample.counted([(1.0, 3), (0.0, 2), (0.5, 2), (1.0, 1), (0.25, 0)])
    assert np.array_equal(counted.values, Sample.of(rows).values)
    assert np.array_equal(counted.counts, Sample.of(rows).counts)
    assert mean_ci(counted, 4) == mean_ci(Sample.of(rows), 4)
    assert counted.mean() == pytest.approx(np.mean(rows))


def test_the_bootstrap_interval_matches_the_normal_one_on_many_labels() -> None:
    rng = np.random.default_rng(3)
    labels = Sample.of(rng.integers(0, 2, 4000).astype(float))
    lo, hi = mean_ci(labels, 0)
    half = 1.96 * np.sqrt(labels.mean() * (1 - labels.mean()) / labels.n)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


def test_too_few_labels_give_no_number() -> None:
    few = quality_of(Sample.of([1.0, 0.0]), min_labeled=3)
    assert few["quality"] is None and few["quality_note"] == "not enough data: 2 labels (need 3)"
    assert quality_of(Sample.of([1.0, 0.0, 1.0]), min_labeled=3)["quality"] == pytest.approx(2 / 3)
    assert too_few("always_strong", Sample.of([1.0] * 3), Sample.of([1.0]), 3) == (
        "not enough data: 3 labeled requests on 'router', 1 on 'always_strong' (need 3 each)")
