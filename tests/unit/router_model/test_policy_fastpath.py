"""The single-row policy (``choose_tier``) decides exactly as the vectorised ``choose_tiers``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_model.policy import choose_tier, choose_tiers

probability = st.floats(0.0, 1.0)
odd = st.sampled_from([0.0, 1.0, 1e-12, 1.0 - 1e-12, 0.5, -0.0, 1.0000001, -1e-9, 0.1, 0.2, 0.3])


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[float], float, list[bool]]:
    k = draw(st.integers(2, 6))
    if draw(st.booleans()):  # a probability vector (sums to 1 up to float error)
        raw = np.asarray(draw(st.lists(probability, min_size=k, max_size=k))) + 1e-9
        row = (raw / raw.sum()).tolist()
    else:  # any values a classifier might return, float drift included
        row = draw(st.lists(st.one_of(probability, odd), min_size=k, max_size=k))
    quality = draw(st.one_of(probability, odd))
    mask = draw(st.lists(st.booleans(), min_size=k, max_size=k).filter(any))
    return row, quality, mask


@settings(max_examples=400, deadline=None)
@given(cases())
def test_single_row_equals_vectorised(case: tuple[list[float], float, list[bool]]) -> None:
    row, quality, mask = case
    expected = int(choose_tiers(np.array([row]), quality, np.array(mask))[0])
    assert choose_tier(row, quality, mask) == expected


def test_random_rows_knobs_and_masks() -> None:
    rng = np.random.default_rng(7)
    for _ in range(2000):
        k = int(rng.integers(2, 6))
        row = rng.dirichlet(np.ones(k)) if rng.random() < 0.7 else rng.random(k) * 1.2 - 0.1
        quality = float(rng.choice([rng.random(), 0.0, 1.0]))
        mask = rng.random(k) < 0.6
        if not mask.any():
            mask[rng.integers(k)] = True
        expected = int(choose_tiers(row[None, :], quality, mask)[0])
        assert choose_tier(row.tolist(), quality, mask.tolist()) == expected


@pytest.mark.parametrize(
    ("row", "quality"),
    [
        ([0.1] * 10 + [0.0], 1.0),  # adequacy 0.9999999999999999: reached within the tolerance
        ([0.3, 0.6, 0.1], 0.9),  # 0.8999999999999999
        ([0.1, 0.2, 0.7], 0.3),  # 0.30000000000000004
        ([0.5, 0.5], 1.0),
        ([-0.1, 0.6, 0.5], 0.0),  # clipped to 0 before the comparison
        ([1.2, -0.2, 0.0], 1.0),  # clipped to 1
        ([float("nan"), 0.5, 0.5], 0.5),
    ],
)
def test_float_edges(row: list[float], quality: float) -> None:
    for mask in ([True] * len(row), [True] * (len(row) - 1) + [False]):
        expected = int(choose_tiers(np.array([row]), quality, np.array(mask))[0])
        assert choose_tier(row, quality, mask) == expected


def test_no_allowed_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="no tier"):
        choose_tier([0.5, 0.5], 0.5, [False, False])
