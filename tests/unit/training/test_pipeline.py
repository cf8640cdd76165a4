"""The default operating point: chosen by target PGR, and what it does in each report."""

from __future__ import annotations

import numpy as np
import pytest

from router_model.errors import InvalidData
from training.data import LabeledRow, cheapest_adequate
from training.dataset import Dataset
from training.fit import predict_proba_full
from training.pipeline import (
    FIT_RULE_MIN_ROWS,
    fit_calibrated,
    gain_rows,
    knob_for_pgr,
    select_fit_rule,
)
from training.report import build_report

# Two tiers, four prompts (as in test_evaluate): weak quality 0.5, strong 0.75, gap 0.25.
#   prompt  weak strong  P(weak adequate)
#   p0      1    1       0.6
#   p1      0    1       0.1
#   p2      0    1       0.2
#   p3      1    0       0.9
S2 = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
C2 = np.array([[1.0, 3.0]] * 4)
P2 = np.array([[0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.9, 0.1]])


def test_knob_for_pgr_is_the_cheapest_knob_that_reaches_the_target() -> None:
    # knob 0.1: nobody goes strong (PGR 0); 0.2: p1 goes strong, quality 0.75 (PGR 1) at cost
    # 1.5; 0.6: p1 and p2, quality 1 (PGR 2) at cost 2; higher knobs cost more, none does better
    assert knob_for_pgr(S2, C2, P2, 0.8) == pytest.approx(0.2)
    assert knob_for_pgr(S2, C2, P2, 1.5) == pytest.approx(0.6)
    assert knob_for_pgr(S2, C2, P2, 0.0) == pytest.approx(0.1)  # free: the highest all-weak knob
    assert knob_for_pgr(S2, C2, P2, 2.5) == 1.0  # unreachable: always the top tier


def test_report_shows_what_the_default_knob_does() -> None:
    point = build_report(S2, C2, ["small", "large"], P2, default_knob=0.2)["at_default_knob"]
    assert point["knob"] == 0.2
    assert (point["cost"], point["quality"], point["strong_share"]) == pytest.approx(
        (1.5, 0.75, 0.25))
    assert point["tier_shares"] == [0.75, 0.25]
    assert point["pgr"] == pytest.approx(1.0)
    assert "at_default_knob" not in build_report(S2, C2, ["small", "large"], P2)


def test_gain_rows_fit_marked_rows_on_which_tier_scored_higher() -> None:
    scores = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.8], [0.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1, 0, 1, 0, 0])
    weight = np.array([1.0, 1.0, 2.0, 10.0, 1.0, 3.0])
    marked = np.array([True, True, True, True, True, False])
    keep, y, w = gain_rows(scores, labels, weight, marked)
    # ties leave the fit (rows 0 and 4); the unmarked tie keeps its label and weight
    assert keep.tolist() == [False, True, True, True, False, True]
    assert y.tolist() == [1, 0, 1, 0]
    assert w == pytest.approx([1.0, 2.0, 6.0, 3.0])


def test_gain_rows_refuse_more_than_two_tiers() -> None:
    with pytest.raises(ValueError, match="two tiers"):
        gain_rows(np.zeros((2, 3)), np.zeros(2, dtype=np.int64), None, np.ones(2, dtype=bool))


def test_a_gain_fit_orders_prompts_by_who_wins_not_by_how_often_tiers_tie() -> None:
    """Feature 0 decides which tier wins a decisive row; feature 1 only how likely a row ties.
    Fitted on labels, a tie counts as "the cheap tier", so feature 1 moves the probability; fitted
    on the gain, ties leave the fit and only feature 0 does. Calibration runs on labels either way.
    """
    rng = np.random.default_rng(0)
    n = 2000
    X = rng.normal(size=(n, 2)).astype(np.float32)
    decisive = rng.random(n) < 1 / (1 + np.exp(-3 * X[:, 1]))
    strong_wins = rng.random(n) < 1 / (1 + np.exp(-3 * X[:, 0]))
    scores = np.where(decisive[:, None],
                      np.where(strong_wins[:, None], [[0.0, 1.0]], [[1.0, 0.0]]), [[1.0, 1.0]])
    ds = Dataset(rows=tuple(LabeledRow(prompt=str(i), scores={"w": a, "s": b})
                            for i, (a, b) in enumerate(scores)),
                 X=X, n_tokens=np.zeros(n, dtype=np.int64), scores=scores,
                 costs=np.tile([1.0, 10.0], (n, 1)),
                 labels=cheapest_adequate(scores, 0.0), skipped=0)
    probe = np.array([[1.0, -2.0], [1.0, 2.0]], dtype=np.float32)

    def strong_proba(gain: np.ndarray | None) -> np.ndarray:
        fitted = fit_calibrated(ds, "logreg", 2, 0, gain=gain)
        return predict_proba_full(fitted.estimator, probe, 2)[:, 1]

    by_label = strong_proba(None)
    by_gain = strong_proba(np.ones(n, dtype=bool))
    assert by_label[1] - by_label[0] > 0.3
    assert abs(by_gain[1] - by_gain[0]) < 0.1


def two_tier_rows(decisive: np.ndarray, strong_wins: np.ndarray, X: np.ndarray,
                  rng: np.random.Generator) -> Dataset:
    """Rows whose tiers differ where ``decisive`` (the strong tier scoring higher where
    ``strong_wins``) and tie otherwise (both right or both wrong, half each)."""
    n = len(X)
    scores = np.where(decisive[:, None],
                      np.where(strong_wins[:, None], [[0.0, 1.0]], [[1.0, 0.0]]),
                      np.where(rng.random(n)[:, None] < 0.5, [[1.0, 1.0]], [[0.0, 0.0]]))
    return Dataset(rows=tuple(LabeledRow(prompt=str(i), scores={"w": a, "s": b})
                              for i, (a, b) in enumerate(scores)),
                   X=X.astype(np.float32), n_tokens=np.zeros(n, dtype=np.int64), scores=scores,
                   costs=np.tile([1.0, 10.0], (n, 1)), labels=cheapest_adequate(scores, 0.0),
                   skipped=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_fit_rule_follows_what_the_traffic_rewards(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    X = rng.normal(size=(n, 2))
    # benchmark-like: how often the tiers differ (feature 1) is the signal; the strong tier
    # wins 90% of those rows wherever they are, so the gain alone is noise
    bench = two_tier_rows(rng.random(n) < 1 / (1 + np.exp(-3 * X[:, 1])), rng.random(n) < 0.9,
                          X, rng)
    # chat-like: below 0 on feature 0 the tiers often differ but it is a coin flip which wins;
    # above, they seldom differ and the strong tier wins. Ties counted as "the cheap tier" rank
    # the coin flips first; the gain ranks the strong tier's wins first.
    chat = two_tier_rows(rng.random(n) < np.where(X[:, 0] < 0, 0.9, 0.3),
                         rng.random(n) < np.where(X[:, 0] < 0, 0.5, 1.0), X, rng)
    everything, every_row = np.ones(n, dtype=bool), np.arange(n)
    picks = {}
    for name, ds in (("bench", bench), ("chat", chat)):
        rule, why = select_fit_rule(ds, "logreg", seed, np.ones(n), everything, every_row)
        picks[name] = rule
        assert why["rows"] == n and abs(why["apgr"]["gain"] - why["apgr"]["label"]) > 0.1
    assert picks == {"bench": "label", "chat": "gain"}


def test_the_fit_rule_stays_label_without_enough_judged_rows_or_two_tiers() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    ds = two_tier_rows(rng.random(300) < 0.5, X[:, 0] > 0, X, rng)
    few = np.arange(FIT_RULE_MIN_ROWS - 1)
    rule, why = select_fit_rule(ds, "logreg", 0, np.ones(300), np.ones(300, dtype=bool), few)
    assert rule == "label" and f"at least {FIT_RULE_MIN_ROWS}" in why["why"]
    three = Dataset(rows=ds.rows, X=ds.X, n_tokens=ds.n_tokens, scores=np.zeros((300, 3)),
                    costs=np.zeros((300, 3)), labels=ds.labels, skipped=0)
    rule, why = select_fit_rule(three, "logreg", 0, np.ones(300), np.ones(300, dtype=bool),
                                np.arange(300))
    assert rule == "label" and "two tiers" in why["why"]


def test_a_gain_fit_with_one_winner_only_is_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    ds = two_tier_rows(rng.random(200) < 0.5, np.ones(200, dtype=bool), X, rng)
    with pytest.raises(InvalidData, match="one class"):
        fit_calibrated(ds, "logreg", 2, 0, gain=np.ones(200, dtype=bool))
    # compared automatically, the rule that cannot fit cannot win
    rule, why = select_fit_rule(ds, "logreg", 0, np.ones(200), np.ones(200, dtype=bool),
                                np.arange(200))
    assert rule == "label" and np.isnan(why["apgr"]["gain"])
