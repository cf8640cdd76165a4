"""Routing metrics against hand-computed examples: APGR, CPT, AIQ, baselines and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.typing import NDArray

from training.evaluate import (
    CurvePoint,
    aiq,
    apgr,
    cpt,
    evaluate_choice,
    fixed_points,
    oracle_curve,
    oracle_point,
    pgr,
    random_curve,
    sweep_router,
    zero_router_curve,
)
from training.report import build_report

F64 = NDArray[np.float64]

# Two tiers, four prompts, binary scores, constant prices weak $1 / strong $3.
#   prompt  weak strong  gain
#   p0      1    1        0
#   p1      0    1       +1
#   p2      0    1       +1
#   p3      1    0       -1
# weak quality = 2/4 = 0.5, strong quality = 3/4 = 0.75, gap 0.25.
S2 = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
C2 = np.array([[1.0, 3.0]] * 4)
# proba[:, 0] = P(weak is adequate) = adequacy of tier 0; it ranks p1 < p2 < p0 < p3: a perfect
# ranking (gainful prompts first, the tie next, the one the strong tier gets wrong last).
P2 = np.array([[0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.9, 0.1]])

# Three tiers at $1 / $2 / $4, graded scores.
#   prompt  t0  t1   t2
#   p0      1   1    1
#   p1      0   0.2  1
#   p2      1   1    1
#   p3      0   0    1
# tier qualities 0.5, 0.55, 1.0; costs 1, 2, 4.
S3 = np.array([[1.0, 1.0, 1.0], [0.0, 0.2, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
C3 = np.array([[1.0, 2.0, 4.0]] * 4)
# adequacy rows: [1, 1, 1], [0, .5, 1], [.8, 1, 1], [0, 0, 1]
P3 = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.8, 0.2, 0.0], [0.0, 0.0, 1.0]])


def _xy(curve: list[CurvePoint]) -> list[tuple[float, float]]:
    return [(p.strong_share, p.quality) for p in curve]


def test_evaluate_choice_figures() -> None:
    # route p1, p2 strong: cost (1+3+3+1)/4 = 2, quality (1+1+1+1)/4 = 1
    pt = evaluate_choice(S2, C2, np.array([0, 1, 1, 0]), knob=0.3)
    assert pt == CurvePoint(0.3, 2.0, 1.0, 0.5, 0.5, (0.5, 0.5))


def test_cost_share_equals_strong_share_for_two_constant_price_tiers() -> None:
    for choice in ([0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1]):
        pt = evaluate_choice(S2, C2, np.array(choice))
        assert pt.cost_share == pytest.approx(pt.strong_share)


def test_cost_share_falls_back_to_strong_share_without_price_spread() -> None:
    pt = evaluate_choice(S2, np.ones((4, 2)), np.array([1, 0, 0, 0]))
    assert pt.cost_share == 0.25


def test_sweep_traces_every_distinct_routing_sorted_by_cost() -> None:
    # knobs 0, .1, .2, .6, .9, 1 -> strong sets {}, {}, {p1}, {p1,p2}, {p0,p1,p2}, all
    curve = sweep_router(S2, C2, P2)
    assert [p.knob for p in curve] == [0.0, 0.1, 0.2, 0.6, 0.9, 1.0]
    assert _xy(curve) == [(0, 0.5), (0, 0.5), (0.25, 0.75), (0.5, 1.0), (0.75, 1.0), (1, 0.75)]
    assert [p.cost for p in curve] == [1.0, 1.0, 1.5, 2.0, 2.5, 3.0]


def test_perfect_ranking_apgr_and_cpt() -> None:
    # PGR = (q - .5)/.25 over strong share: (0,0) (0,0) (.25,1) (.5,2) (.75,2) (1,1)
    # area = .25*(0+1)/2 + .25*(1+2)/2 + .25*2 + .25*(2+1)/2 = .125+.375+.5+.375 = 1.375
    curve = sweep_router(S2, C2, P2)
    assert apgr(curve, 0.5, 0.75) == pytest.approx(1.375)
    # PGR .5 is reached half way from (0, 0) to (.25, 1): .125; PGR .8 at .8*.25 = .2
    assert cpt(curve, 0.5, 0.5, 0.75) == pytest.approx(0.125)
    assert cpt(curve, 0.8, 0.5, 0.75) == pytest.approx(0.2)
    assert cpt(curve, 2.5, 0.5, 0.75) is None


def test_uninformative_router_and_random_baseline_score_one_half() -> None:
    # the same proba for every prompt: all prompts switch at one knob -> (0, 0) then (1, 1)
    flat = np.tile([0.5, 0.5], (4, 1))
    assert apgr(sweep_router(S2, C2, flat), 0.5, 0.75) == pytest.approx(0.5)
    rnd = random_curve(S2, C2, n_points=5)
    assert _xy(rnd) == [(0, 0.5), (0.25, 0.5625), (0.5, 0.625), (0.75, 0.6875), (1, 0.75)]
    assert apgr(rnd, 0.5, 0.75) == pytest.approx(0.5)
    assert cpt(rnd, 0.5, 0.5, 0.75) == pytest.approx(0.5)
    assert cpt(rnd, 0.8, 0.5, 0.75) == pytest.approx(0.8)


def test_apgr_closes_a_partial_curve_at_both_ends() -> None:
    # one point at share .5 with PGR 1: (0,0)-(.5,1)-(1,1) -> .25 + .5 = .75
    pt = CurvePoint(None, 2.0, 0.75, 0.5, 0.5, (0.5, 0.5))
    assert apgr([pt], 0.5, 0.75) == pytest.approx(0.75)


def test_oracle_two_tiers_upgrades_by_gain() -> None:
    # upgrade p1, p2 (+1 each), then the tie p0 (0), then p3 (-1); points at the rate changes
    curve = oracle_curve(S2, C2)
    assert _xy(curve) == [(0, 0.5), (0.5, 1.0), (0.75, 1.0), (1, 0.75)]
    # the perfect ranking router is the oracle: same APGR 1.375
    assert apgr(curve, 0.5, 0.75) == pytest.approx(1.375)
    best = oracle_point(S2, C2)  # p0 weak, p1 strong, p2 strong, p3 weak: cost (1+3+3+1)/4
    assert (best.cost, best.quality, best.tier_shares) == (2.0, 1.0, (0.5, 0.5))


def test_oracle_k_tiers_greedy_by_gain_per_cost() -> None:
    # p1: from t0, gain/cost to t1 = .2/1, to t2 = 1/3 -> straight to t2 (t1 is off its frontier)
    # p3: to t1 gains nothing, to t2 = 1/3. Ties -> row order: p1 then p3. Then the tail p0, p2
    # move to t2 at no gain. costs (1+1+1+1)/4=1, 7/4, 10/4, 13/4, 4. Points are kept where the
    # rate changes (1/3 -> 0 -> end), since the curve is straight between: (1.75, .75) and
    # (3.25, 1) lie on the segments.
    curve = oracle_curve(S3, C3)
    assert [(p.cost, p.quality) for p in curve] == [(1, .5), (2.5, 1), (4, 1)]
    assert [p.cost_share for p in curve] == [0, 0.5, 1]
    assert curve[1].tier_shares == (0.5, 0.0, 0.5)
    # cost-share axis, PGR = (q - .5)/.5: (0,0) (.5,1) (1,1): .25 + .5 = .75
    assert apgr(curve, 0.5, 1.0) == pytest.approx(0.75)
    best = oracle_point(S3, C3)
    assert (best.cost, best.quality) == (2.5, 1.0)


def test_zero_router_drops_dominated_tier() -> None:
    # (1,.5) (2,.55) (4,1): the chord at cost 2 is .5 + .5/3 = .667 > .55 -> middle tier dropped
    fixed = fixed_points(S3, C3)
    assert [(p.cost, p.quality) for p in fixed] == [(1, .5), (2, .55), (4, 1)]
    assert zero_router_curve(fixed) == [fixed[0], fixed[2]]


def test_zero_router_keeps_hull_tier_and_cuts_decreasing_tail() -> None:
    pts = [CurvePoint(None, c, q, 0.0, 0.0, (1.0, 0.0)) for c, q in
           [(1, .5), (2, .9), (4, 1.0), (5, .95), (4, .7)]]
    # (2,.9) is above the chord (1,.5)-(4,1) = .667; (5,.95) is worse than (4,1); (4,.7) same x
    assert zero_router_curve(pts) == [pts[0], pts[1], pts[2]]


def test_aiq_of_piecewise_linear_hull() -> None:
    # router points (cost, q): (1,.5) (1.5,.75) (2,1) (2.5,1) (3,.75); hull (1,.5)-(2,1) flat to 3
    # area over [1, 3] = 1 * (.5+1)/2 + 1 * 1 = 1.75 -> AIQ = 1.75 / 2 = .875
    assert aiq(sweep_router(S2, C2, P2), 1.0, 3.0) == pytest.approx(0.875)


def test_aiq_extension_outside_the_curve() -> None:
    # a single point (2, .6) over [1, 4]: nothing left of 2, flat .6 up to 4 -> .6*2/3 = .4
    pt = CurvePoint(None, 2.0, 0.6, 0.0, 0.0, (1.0, 0.0))
    assert aiq([pt], 1.0, 4.0) == pytest.approx(0.4)
    assert aiq([pt], 0.0, 2.0) == 0.0
    with pytest.raises(ValueError):
        aiq([pt], 2.0, 2.0)


def test_k_tier_router_on_cost_share_axis() -> None:
    # knobs 0, .5, .8, 1 -> choices [0,0,0,0] [0,1,0,2] [0,2,0,2] [0,2,1,2]
    # costs 1, 2, 2.5, 2.75; qualities .5, .8, 1, 1; cost_share (c - 1)/3
    curve = sweep_router(S3, C3, P3)
    assert [p.knob for p in curve] == [0.0, 0.5, 0.8, 1.0]
    assert [(p.cost, p.quality) for p in curve] == [(1, .5), (2, .8), (2.5, 1), (2.75, 1)]
    assert curve[1].tier_shares == (0.5, 0.25, 0.25)
    assert curve[1].cost_share == pytest.approx(1 / 3)
    # PGR (0,0) (1/3,.6) (.5,1) (.5833,1) closed at (1,1): .1 + (.6+1)/2/6 + .5 = 11/15
    assert apgr(curve, 0.5, 1.0) == pytest.approx(11 / 15)
    # CPT50 = (.5/.6) * 1/3 = 5/18; CPT80 = 1/3 + (.2/.4) * (1/6) = 5/12
    assert cpt(curve, 0.5, 0.5, 1.0) == pytest.approx(5 / 18)
    assert cpt(curve, 0.8, 0.5, 1.0) == pytest.approx(5 / 12)
    # hull (1,.5)-(2.5,1) (the point (2,.8) is under its chord) flat to 4:
    # (1.5*.75 + 1.5*1)/3 = .875
    assert aiq(curve, 1.0, 4.0) == pytest.approx(0.875)


def test_report_two_tiers() -> None:
    rep = build_report(S2, C2, ["small", "large"], P2)
    json.dumps(rep, allow_nan=False)
    assert (rep["apgr"], rep["cpt50"], rep["cpt80"]) == pytest.approx((1.375, 0.125, 0.2))
    assert rep["aiq"] == pytest.approx(0.875)
    assert (rep["n"], rep["share_axis"], rep["cost_range"]) == (4, "strong_share", [1.0, 3.0])
    assert (rep["weak_quality"], rep["strong_quality"], rep["oracle_quality"]) == (0.5, 0.75, 1.0)
    b = rep["baselines"]
    assert set(b) == {"always_small", "always_large", "random", "zero_router", "oracle"}
    # a fixed tier is one point: no area, so neither APGR nor AIQ (the zero router carries them)
    assert b["always_small"] == {"apgr": None, "cpt50": None, "cpt80": None, "aiq": None,
                                 "cost": 1.0, "quality": 0.5}
    # always-large is the single point (share 1, PGR 1): reaches both targets at share 1
    assert b["always_large"] == {"apgr": None, "cpt50": 1.0, "cpt80": 1.0, "aiq": None,
                                 "cost": 3.0, "quality": 0.75}
    assert b["random"]["apgr"] == pytest.approx(0.5)
    assert b["zero_router"]["apgr"] == pytest.approx(0.5)
    # zero router: line (1,.5)-(3,.75), mean .625
    assert b["zero_router"]["aiq"] == pytest.approx(0.625)
    assert b["oracle"]["apgr"] == pytest.approx(1.375)
    assert (b["oracle"]["cost"], b["oracle"]["quality"]) == (2.0, 1.0)
    # router AIQ equals the oracle's: the whole gap to the zero router is closed
    assert rep["gap_closed"] == pytest.approx(1.0)
    assert rep["curve"][0] == {"knob": 0.0, "cost": 1.0, "quality": 0.5, "strong_share": 0.0,
                               "cost_share": 0.0, "tier_shares": [1.0, 0.0]}


def test_report_three_tiers() -> None:
    rep = build_report(S3, C3, ["s", "m", "l"], P3)
    assert rep["share_axis"] == "cost_share"
    assert rep["apgr"] == pytest.approx(11 / 15)
    # zero router: chord (1,.5)-(4,1) -> mean .75; oracle and router .875 -> gap closed 1
    assert rep["baselines"]["zero_router"]["aiq"] == pytest.approx(0.75)
    assert rep["baselines"]["oracle"]["aiq"] == pytest.approx(0.875)
    assert rep["gap_closed"] == pytest.approx(1.0)
    # the middle tier alone: cost share 1/3, PGR .1 -> reaches neither target
    assert rep["baselines"]["always_m"]["cpt50"] is None


def test_report_without_quality_gap_has_null_pgr_figures() -> None:
    s = np.array([[1.0, 1.0], [0.0, 0.0]])
    rep = build_report(s, np.array([[1.0, 2.0]] * 2), ["a", "b"], np.tile([0.5, 0.5], (2, 1)))
    json.dumps(rep, allow_nan=False)
    assert (rep["apgr"], rep["cpt50"], rep["cpt80"]) == (None, None, None)
    assert rep["aiq"] == pytest.approx(0.5)


def test_pgr() -> None:
    assert pgr(0.6, 0.5, 0.75) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="undefined"):
        pgr(0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        apgr(random_curve(S2, C2), 0.5, 0.5)


@pytest.mark.parametrize(
    ("scores", "costs"),
    [(np.zeros((0, 2)), np.zeros((0, 2))), (np.zeros((3, 1)), np.zeros((3, 1))),
     (np.zeros((3, 2)), np.zeros((3, 3))), (np.full((1, 2), np.nan), np.ones((1, 2)))],
)
def test_bad_inputs_raise(scores: F64, costs: F64) -> None:
    with pytest.raises(ValueError):
        fixed_points(scores, costs)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        evaluate_choice(S2, C2, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError):
        sweep_router(S2, C2, P2, knobs=[0.5, 1.5])
    with pytest.raises(ValueError):
        sweep_router(S2, C2, P3)
    with pytest.raises(ValueError):
        build_report(S2, C2, ["a", "a"], P2)
    with pytest.raises(ValueError):
        apgr([], 0.5, 0.75)


def test_large_sweep_is_bounded_and_oracle_dominates() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    s = (rng.random((n, 2)) < [0.5, 0.7]).astype(np.float64)
    c = np.tile([1.0, 10.0], (n, 1))
    proba = rng.dirichlet([1.0, 1.0], size=n)
    curve = sweep_router(s, c, proba)
    assert len(curve) <= 200
    assert {curve[0].strong_share, curve[-1].strong_share} == {0.0, 1.0}
    weak, strong = s[:, 0].mean(), s[:, 1].mean()
    assert apgr(curve, weak, strong) <= apgr(oracle_curve(s, c), weak, strong)
    assert aiq(curve, 1.0, 10.0) <= aiq(oracle_curve(s, c), 1.0, 10.0) + 1e-12
