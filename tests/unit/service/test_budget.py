"""The budget knob: the top tier's share of a window of decisions kept at a target."""

from __future__ import annotations

import numpy as np
import pytest

from router_model.policy import choose_tiers, knob_for_share_below_top
from service.gateway.config import BudgetConfig
from service.gateway.levers.budget import BudgetKnob, below_top

LADDER = ("weak", "mid", "strong")


def probs(weak: float, mid: float) -> dict[str, float]:
    return {"weak": weak, "mid": mid, "strong": 1.0 - weak - mid}


def test_below_top_is_the_adequacy_of_the_tier_under_the_top() -> None:
    assert below_top(probs(0.2, 0.5), LADDER) == pytest.approx(0.7)
    assert below_top({"weak": 0.9, "strong": 0.1}, ("weak", "strong")) == pytest.approx(0.9)
    assert below_top({"weak": 0.2}, LADDER) is None  # a fail-open record: nothing to learn


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.99, 1.0])
def test_the_knob_sends_at_most_the_share_of_the_window_to_the_top(share: float) -> None:
    rng = np.random.default_rng(7)
    budget = BudgetKnob(share, window=500, min_samples=100, ladder=LADDER, refresh=1)
    rows = rng.dirichlet([1.0, 1.0, 1.0], size=500)
    for r in rows:
        budget.observe(probs(r[0], r[1]), "v1")
    knob = budget.knob()
    assert knob is not None
    top = choose_tiers(rows, knob) == 2
    assert top.mean() <= share + 1e-9
    # the largest such knob: any higher knob sends more than the share (unless already 1.0)
    if knob < 1.0:
        assert (choose_tiers(rows, knob + 1e-9) == 2).mean() > share


def test_no_knob_until_min_samples() -> None:
    budget = BudgetKnob(0.3, window=50, min_samples=20, ladder=LADDER)
    for i in range(19):
        budget.observe(probs(0.01 * i, 0.1), "v1")
        assert budget.knob() is None
    budget.observe(probs(0.5, 0.1), "v1")
    assert budget.knob() is not None and len(budget) == 20


def test_the_window_forgets_old_traffic() -> None:
    """Easy traffic after hard traffic: the knob follows the newest ``window`` decisions."""
    budget = BudgetKnob(0.5, window=100, min_samples=10, ladder=("weak", "strong"), refresh=1)
    for _ in range(100):
        budget.observe({"weak": 0.2, "strong": 0.8}, "v1")
    assert budget.knob() == pytest.approx(0.2)
    for _ in range(100):
        budget.observe({"weak": 0.9, "strong": 0.1}, "v1")
    assert budget.knob() == pytest.approx(0.9)


def test_versions_sharing_the_traffic_are_pooled() -> None:
    """A canary (every tenth decision from v2) neither empties nor starves the window."""
    budget = BudgetKnob(0.3, window=100, min_samples=20, ladder=LADDER)
    for i in range(1000):
        budget.observe(probs(0.3, 0.3), "v2" if i % 10 == 0 else "v1")
    assert len(budget) == 100 and budget.knob() is not None


def test_a_version_that_decides_alone_replaces_the_others() -> None:
    budget = BudgetKnob(0.5, window=100, min_samples=10, ladder=("weak", "strong"), refresh=1)
    for _ in range(100):
        budget.observe({"weak": 0.2, "strong": 0.8}, "v1")
    for _ in range(9):
        budget.observe({"weak": 0.9, "strong": 0.1}, "v2")
        assert len(budget) == 100  # not yet: v2 might be a canary
    budget.observe({"weak": 0.9, "strong": 0.1}, "v2")
    assert len(budget) == 10 and budget.model_version == "v2"
    assert budget.knob() == pytest.approx(0.9)


def test_seed_replays_the_newest_decisions_oldest_first() -> None:
    budget = BudgetKnob(0.5, window=3, min_samples=2, ladder=("weak", "strong"), refresh=1)
    newest_first = [
        ("v2", {"weak": 0.9, "strong": 0.1}),
        ("v2", {"weak": 0.7}),                 # incomplete: skipped
        ("v1", {"weak": 0.8, "strong": 0.2}),
        ("v1", {"weak": 0.6, "strong": 0.4}),
        ("v1", {"weak": 0.5, "strong": 0.5}),  # beyond the window
    ]
    assert budget.seed(newest_first) == 3
    assert budget.model_version == "v2" and len(budget) == 3
    assert budget.knob() == pytest.approx(knob_for_share_below_top(np.array([0.6, 0.8, 0.9]), 0.5))
    assert BudgetKnob(0.5, 3, 1, ("weak", "strong")).seed([]) == 0


def test_the_config_refuses_min_samples_above_the_window() -> None:
    with pytest.raises(ValueError, match="min_samples"):
        BudgetConfig(top_share=0.3, window=100, min_samples=101)
    with pytest.raises(ValueError):
        BudgetConfig(top_share=1.5)
