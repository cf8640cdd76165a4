"""Pure routing metrics on a frozen evaluation set: cost, quality, PGR/APGR/CPT, AIQ and baselines.

``scores``/``costs`` ``(n, k)``: quality in [0, 1] and USD cost per prompt and tier, cheapest tier
first; a routing is ``choice`` ``(n,)``. As in RouteLLM's and RouterBench's evaluation code:

- weak = always tier 0, strong = always the top tier; ``PGR = (q - q_weak) / (q_strong - q_weak)``,
  undefined (``ValueError``) when the two are equal. A negative gap is used as is.
- Share axis of APGR/CPT: the top tier's share of calls for two tiers (RouteLLM), ``cost_share``
  for more (a middle tier spends part of the gap; cost is the axis all mixes share).
- APGR: trapezoidal area under PGR over the share axis. As RouteLLM's thresholds always include
  all-weak and all-strong, the curve is closed with (0, PGR 0) and (1, PGR 1) before integrating,
  so an uninformative router scores 0.5.
- CPT(x): the least share where the curve's own points, joined linearly (a random mix of two knobs
  realises any point between them), reach PGR >= x; ``None`` if they never do.
- AIQ: area under the non-decreasing convex hull of the (cost, quality) points on ``[cost_min,
  cost_max]``, over ``cost_max - cost_min``. As in RouterBench's code the hull extends flat at its
  last quality up to ``cost_max`` (more budget buys nothing) and adds nothing left of its cheapest
  point (no routing exists at that budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.policy import adequacy, choose_tiers

F64 = NDArray[np.float64]
EPS = 1e-12
MAX_SWEEP_POINTS = 200


@dataclass(frozen=True)
class CurvePoint:
    """One routing's figures: mean USD cost and score per request, the top tier's share of calls,
    ``cost_share = (cost - cost(always tier 0)) / (cost(always top) - cost(always tier 0))`` in
    [0, 1] (the top tier's share if the two cost the same) and every tier's share."""

    knob: float | None
    cost: float
    quality: float
    strong_share: float
    cost_share: float
    tier_shares: tuple[float, ...]


def check_outcomes(scores: F64, costs: F64) -> tuple[F64, F64]:
    """The (n, k) scores and costs as float64 arrays, checked.

    Raises:
        ValueError: when the shapes differ, hold no prompt or one tier, or values are not finite.
    """
    s, c = np.asarray(scores, dtype=np.float64), np.asarray(costs, dtype=np.float64)
    if s.ndim != 2 or s.shape != c.shape:
        raise ValueError(f"scores {s.shape} and costs {c.shape} must be the same (n, k) shape")
    if s.shape[0] == 0 or s.shape[1] < 2:
        raise ValueError(f"need at least one prompt and two tiers, got shape {s.shape}")
    if not (np.isfinite(s).all() and np.isfinite(c).all()):
        raise ValueError("scores and costs must be finite")
    return s, c


def curve_point(
    knob: float | None, cost: float, quality: float, shares: F64, span: tuple[float, float]
) -> CurvePoint:
    return CurvePoint(
        knob=knob, cost=float(cost), quality=float(quality), strong_share=float(shares[-1]),
        cost_share=float(cost_share(cost, shares[-1], span)),
        tier_shares=tuple(float(x) for x in shares),
    )


def cost_share(cost: Any, top_share: Any, span: tuple[float, float]) -> Any:
    """``CurvePoint.cost_share`` of a point, or of points given as arrays."""
    lo, hi = span
    # no price spread between tier 0 and the top: the top tier's share is the only spend measure
    return np.clip((cost - lo) / (hi - lo) if hi - lo > 0 else top_share, 0.0, 1.0)


def _span(c: F64) -> tuple[float, float]:
    return float(c[:, 0].mean()), float(c[:, -1].mean())


def evaluate_choice(
    scores: F64, costs: F64, choice: NDArray[np.int64], knob: float | None = None
) -> CurvePoint:
    """Mean cost, mean quality and tier shares of one routing.

    Raises:
        ValueError: on malformed or empty inputs, or a choice outside ``[0, k)``.
    """
    s, c = check_outcomes(scores, costs)
    n, k = s.shape
    ch = np.asarray(choice)
    if ch.shape != (n,) or not np.issubdtype(ch.dtype, np.integer) or ch.min() < 0 or ch.max() >= k:
        raise ValueError(f"choice must be {n} integers in [0, {k})")
    shares = np.bincount(ch, minlength=k) / n
    rows = np.arange(n)
    return curve_point(knob, c[rows, ch].mean(), s[rows, ch].mean(), shares, _span(c))


def _default_knobs(proba: F64) -> F64:
    # the routing only changes where the knob crosses an adequacy value, so those values (or their
    # quantiles when there are too many) trace every distinct point of the curve
    a = np.clip(adequacy(proba)[:, :-1].ravel(), 0.0, 1.0)
    inner = np.unique(a)
    if inner.size > MAX_SWEEP_POINTS - 2:
        inner = np.unique(np.quantile(a, np.linspace(0, 1, MAX_SWEEP_POINTS - 2), method="lower"))
    return np.unique(np.concatenate([[0.0], inner, [1.0]]))


def sweep_router(
    scores: F64, costs: F64, proba: F64, knobs: Sequence[float] | None = None
) -> list[CurvePoint]:
    """The router's curve: ``choose_tiers`` at each knob, sorted by cost.

    Raises:
        ValueError: on malformed inputs or a knob outside [0, 1].
    """
    s, c = check_outcomes(scores, costs)
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != s.shape:
        raise ValueError(f"proba {p.shape} must have the shape of scores {s.shape}")
    grid = _default_knobs(p) if knobs is None else np.asarray(list(knobs), dtype=np.float64)
    if grid.size == 0 or not ((grid >= 0.0) & (grid <= 1.0)).all():
        raise ValueError("knobs must be a non-empty sequence of values in [0, 1]")
    points = [evaluate_choice(s, c, choose_tiers(p, float(q)), float(q)) for q in grid]
    return sorted(points, key=lambda pt: (pt.cost, pt.quality, pt.knob or 0.0))


def random_curve(scores: F64, costs: F64, n_points: int = 21) -> list[CurvePoint]:
    """Random routing between tier 0 and the top tier at strong share p, in expectation (no RNG).

    Raises:
        ValueError: on malformed inputs or fewer than two points.
    """
    s, c = check_outcomes(scores, costs)
    if n_points < 2:
        raise ValueError("n_points must be at least 2")
    q0, q1 = s[:, 0].mean(), s[:, -1].mean()
    c0, c1 = _span(c)
    out = []
    for p in np.linspace(0.0, 1.0, n_points):
        shares = np.zeros(s.shape[1])
        shares[0], shares[-1] = 1.0 - p, p
        cost, quality = (1 - p) * c0 + p * c1, (1 - p) * q0 + p * q1
        out.append(curve_point(float(p), cost, quality, shares, (c0, c1)))
    return out


def fixed_points(scores: F64, costs: F64) -> list[CurvePoint]:
    """Always tier j, for every tier, cheapest first.

    Raises:
        ValueError: on malformed or empty inputs.
    """
    s, c = check_outcomes(scores, costs)
    return [evaluate_choice(s, c, np.full(len(s), j, dtype=np.int64)) for j in range(s.shape[1])]


def oracle_point(scores: F64, costs: F64) -> CurvePoint:
    """Perfect knowledge at full quality: per prompt, the cheapest tier with the maximum score.

    Raises:
        ValueError: on malformed or empty inputs.
    """
    s, c = check_outcomes(scores, costs)
    best = s == s.max(axis=1, keepdims=True)
    return evaluate_choice(s, c, np.where(best, c, np.inf).argmin(axis=1).astype(np.int64))


def _row_frontier(score: F64, price: F64) -> list[int]:
    """One prompt's tiers on the upper concave frontier of (price, score), cheapest first."""
    path = [int(np.lexsort((np.arange(score.size), -score, price))[0])]
    while True:
        dp, dq = price - price[path[-1]], score - score[path[-1]]
        up = (dp > 0) & (dq > 0)
        if not up.any():
            return path
        path.append(int(np.argmax(np.where(up, dq / np.where(up, dp, 1.0), -np.inf))))


def _oracle_steps(s: F64, price: F64) -> tuple[NDArray[np.int64], NDArray[np.int64], F64, int]:
    """Start tiers, then (row, from, to, rate) of every upgrade in oracle order; phase-1 length."""
    n, k = s.shape
    starts, up, tail = [], [], []
    for i in range(n):
        path = _row_frontier(s[i], price[i])
        starts.append(path[0])
        up += [(i, a, b, (s[i, b] - s[i, a]) / (price[i, b] - price[i, a]))
               for a, b in zip(path, path[1:], strict=False)]
        if path[-1] != k - 1:
            dp = price[i, -1] - price[i, path[-1]]
            rate = (s[i, -1] - s[i, path[-1]]) / dp if dp > 0 else np.inf
            tail.append((i, path[-1], k - 1, rate))
    # best rate first; a prompt's own frontier rates never increase, so ties keep row order
    steps = sorted(up, key=lambda t: -t[3]) + sorted(tail, key=lambda t: -t[3])
    table = np.array([t[:3] for t in steps], dtype=np.int64).reshape(-1, 3)
    rates = np.array([t[3] for t in steps], dtype=np.float64)
    return np.array(starts, dtype=np.int64), table, rates, len(up)


def oracle_curve(scores: F64, costs: F64, max_points: int = MAX_SWEEP_POINTS) -> list[CurvePoint]:
    """The best achievable curve with perfect knowledge of every prompt's scores.

    Greedy on the metric's axis (a step's price: one top-tier call for two tiers, its USD cost for
    more): from each prompt's cheapest tier, upgrade along each prompt's concave (price, score)
    frontier by marginal gain per marginal price, reaching ``oracle_point``; then close at
    always-top, least loss per price first. Exact at every share for two tiers (RouteLLM's optimal
    router); for more, the multiple-choice-knapsack LP frontier, exact at its vertices. Points are
    kept where the marginal rate changes, or at ``max_points`` evenly spaced steps past that many.

    Raises:
        ValueError: on malformed or empty inputs.
    """
    s, c = check_outcomes(scores, costs)
    n, k = s.shape
    price = np.broadcast_to(np.arange(k, dtype=np.float64), (n, k)) if k == 2 else c
    starts, steps, rates, n_up = _oracle_steps(s, price)
    m, rows = len(steps), np.arange(n)
    r, a, b = steps[:, 0], steps[:, 1], steps[:, 2]
    moved = np.zeros((m, k))
    np.add.at(moved, (np.arange(m), b), 1.0)
    np.add.at(moved, (np.arange(m), a), -1.0)
    dq, dc = s[r, b] - s[r, a], c[r, b] - c[r, a]
    quality = (s[rows, starts].sum() + np.concatenate([[0.0], np.cumsum(dq)])) / n
    cost = (c[rows, starts].sum() + np.concatenate([[0.0], np.cumsum(dc)])) / n
    counts = np.bincount(starts, minlength=k) + np.vstack([np.zeros(k), np.cumsum(moved, axis=0)])
    kinks = 1 + np.flatnonzero(rates[1:] != rates[:-1])
    if kinks.size > max_points:
        kinks = np.round(np.linspace(0, m, max_points)).astype(np.int64)
    keep = np.unique(np.concatenate([[0, n_up, m], kinks]).astype(np.int64))
    return [curve_point(None, cost[j], quality[j], counts[j] / n, _span(c)) for j in keep]


def _cost_quality(curve: Sequence[CurvePoint]) -> tuple[F64, F64]:
    return np.array([p.cost for p in curve]), np.array([p.quality for p in curve])


def _ndch(x: F64, y: F64) -> list[int]:
    """Indices of the non-decreasing upper convex hull of (x, y), by increasing x."""
    order: list[int] = np.lexsort((-y, x)).tolist()
    xs, ys = x.tolist(), y.tolist()  # Python floats: the same doubles, a faster loop
    # one point per x (the best), from the cheapest point up to the first best quality
    uniq = [order[0]] + [j for i, j in zip(order, order[1:], strict=False) if xs[j] != xs[i]]
    uniq = uniq[: int(np.argmax(y[uniq])) + 1]
    hull: list[int] = []
    for j in uniq:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (xs[b] - xs[a]) * (ys[j] - ys[a]) - (ys[b] - ys[a]) * (xs[j] - xs[a]) < 0:
                break
            hull.pop()  # b lies on or under the chord a-j
        hull.append(j)
    return hull


def zero_router_curve(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """RouterBench's Zero router: the non-decreasing convex hull of the given (fixed-tier) points.

    Raises:
        ValueError: when ``points`` is empty.
    """
    if not points:
        raise ValueError("zero_router_curve needs at least one point")
    return [points[i] for i in _ndch(*_cost_quality(points))]


def _area(x: F64, y: F64) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def pgr(quality: float, weak_quality: float, strong_quality: float) -> float:
    """Performance gap recovered: ``(quality - weak) / (strong - weak)``.

    Raises:
        ValueError: when strong and weak quality are equal (no gap to recover).
    """
    gap = strong_quality - weak_quality
    if abs(gap) <= EPS:
        raise ValueError("PGR is undefined when strong and weak quality are equal")
    return (quality - weak_quality) / gap


def _pgr_curve(curve: Sequence[CurvePoint], weak: float, strong: float) -> tuple[F64, F64]:
    x, _, quality = _curve_axes(curve)
    return _pgr_xy(x, quality, weak, strong)


def _curve_axes(curve: Sequence[CurvePoint]) -> tuple[F64, F64, F64]:
    """(share axis (module doc), cost, quality) per point of a non-empty curve."""
    if not curve:
        raise ValueError("the curve is empty")
    x = np.array([p.strong_share if len(p.tier_shares) == 2 else p.cost_share for p in curve])
    return (x, *_cost_quality(curve))


def _pgr_xy(x: F64, quality: F64, weak: float, strong: float) -> tuple[F64, F64]:
    """The points' (share, PGR), by share then PGR (``pgr`` of each point)."""
    gap = strong - weak
    if abs(gap) <= EPS:
        raise ValueError("PGR is undefined when strong and weak quality are equal")
    g = (quality - weak) / gap
    order = np.lexsort((g, x))
    return x[order], g[order]


def apgr(curve: Sequence[CurvePoint], weak_quality: float, strong_quality: float) -> float:
    """RouteLLM's average PGR: area under PGR over the share axis, closed at shares 0 and 1.

    Raises:
        ValueError: on an empty curve or equal strong and weak quality.
    """
    return _apgr_xy(*_pgr_curve(curve, weak_quality, strong_quality))


def _apgr_xy(x: F64, g: F64) -> float:
    return _area(np.concatenate([[0.0], x, [1.0]]), np.concatenate([[0.0], g, [1.0]]))


def cpt(curve: Sequence[CurvePoint], target_pgr: float, weak_quality: float,
        strong_quality: float) -> float | None:
    """Call-performance threshold: the smallest share reaching ``target_pgr``; None if never.

    Raises:
        ValueError: on an empty curve or equal strong and weak quality.
    """
    return _cpt_xy(*_pgr_curve(curve, weak_quality, strong_quality), target_pgr)


def _cpt_xy(x: F64, g: F64, target_pgr: float) -> float | None:
    hit = np.flatnonzero(g >= target_pgr - EPS)
    if hit.size == 0:
        return None
    j = int(hit[0])
    if j == 0:
        return float(x[0])
    frac = (target_pgr - g[j - 1]) / (g[j] - g[j - 1])
    return float(x[j - 1] + np.clip(frac, 0.0, 1.0) * (x[j] - x[j - 1]))


def aiq(curve: Sequence[CurvePoint], cost_min: float, cost_max: float) -> float:
    """RouterBench's AIQ: mean quality of the curve's non-decreasing convex hull over a cost range.

    Raises:
        ValueError: on an empty curve or ``cost_max <= cost_min``.
    """
    if not curve or not cost_max > cost_min:
        raise ValueError(f"AIQ needs points and cost_max > cost_min, got [{cost_min}, {cost_max}]")
    return _aiq_xy(*_cost_quality(curve), cost_min, cost_max)


def _aiq_xy(x: F64, y: F64, cost_min: float, cost_max: float) -> float:
    h = _ndch(x, y)
    hx, hy = x[h], y[h]
    start = max(cost_min, float(hx[0]))
    if start >= cost_max:
        return 0.0
    xs = np.unique(np.concatenate([[start, cost_max], hx[(hx > start) & (hx < cost_max)]]))
    return _area(xs, np.interp(xs, hx, hy)) / (cost_max - cost_min)


@dataclass(frozen=True)
class Frame:
    """What every figure of one report is measured against: the fixed tiers' quality and cost."""

    weak: float
    strong: float
    cost_min: float
    cost_max: float


def point_dict(p: CurvePoint) -> dict[str, Any]:
    return {**asdict(p), "tier_shares": list(p.tier_shares)}


def curve_figures(curve: Sequence[CurvePoint], f: Frame, single: bool) -> dict[str, Any]:
    """APGR/CPT/AIQ of a curve; a single point has no area, so its APGR and AIQ are None.

    Raises:
        ValueError: on an empty curve.
    """
    return axis_figures(*_curve_axes(curve), f, single)


def axis_figures(x: F64, cost: F64, quality: F64, f: Frame, single: bool) -> dict[str, Any]:
    """``curve_figures`` of arrays (share axis, cost, quality per point): no points built."""
    gap = abs(f.strong - f.weak) > EPS
    spread = f.cost_max > f.cost_min
    xs, g = _pgr_xy(x, quality, f.weak, f.strong) if gap else (x, quality)
    return {
        "apgr": _apgr_xy(xs, g) if gap and not single else None,
        "cpt50": _cpt_xy(xs, g, 0.5) if gap else None,
        "cpt80": _cpt_xy(xs, g, 0.8) if gap else None,
        "aiq": _aiq_xy(cost, quality, f.cost_min, f.cost_max) if spread and not single else None,
    }
