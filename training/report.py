"""The evaluation report: one router's curve against fixed, random, zero-router and oracle
routing, with the metrics of ``training.evaluate``, as one JSON-ready document."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from router_model.policy import choose_tiers
from training.evaluate import (
    EPS,
    F64,
    Frame,
    check_outcomes,
    curve_figures,
    evaluate_choice,
    fixed_points,
    oracle_curve,
    oracle_point,
    pgr,
    point_dict,
    random_curve,
    sweep_router,
    zero_router_curve,
)

logger = logging.getLogger(__name__)


def build_report(
    scores: F64, costs: F64, tier_names: Sequence[str], proba: F64,
    default_knob: float | None = None,
) -> dict[str, Any]:
    """JSON-ready report of a router's curve against fixed, random, zero-router and oracle routing.

    With ``default_knob`` (the bundle's ``threshold``), ``at_default_knob`` holds the one routing
    a request without a policy gets: its cost, quality, tier shares and PGR.

    AIQ's cost range is the cheapest to the dearest point of all the curves compared. Undefined
    figures are None: APGR/CPT when weak and strong quality are equal, AIQ when every routing costs
    the same, APGR of a fixed tier (a single point has no area; its CPT is its own share if its PGR
    reaches the target). ``gap_closed = (aiq - zero_router aiq) / (oracle aiq - zero_router aiq)``.

    Raises:
        ValueError: on malformed inputs or tier names that are not unique and one per tier.
    """
    s, c = check_outcomes(scores, costs)
    n, k = s.shape
    if len(tier_names) != k or len(set(tier_names)) != k:
        raise ValueError(f"need {k} distinct tier names, got {list(tier_names)}")
    router = sweep_router(s, c, proba)
    fixed = fixed_points(s, c)
    curves = {"random": random_curve(s, c), "zero_router": zero_router_curve(fixed),
              "oracle": oracle_curve(s, c)}
    best = oracle_point(s, c)
    every = [p for cv in (router, fixed, *curves.values()) for p in cv]
    f = Frame(fixed[0].quality, fixed[-1].quality,
               min(p.cost for p in every), max(p.cost for p in every))
    baselines: dict[str, dict[str, Any]] = {}
    for name, point in zip(tier_names, fixed, strict=True):
        baselines[f"always_{name}"] = {**curve_figures([point], f, single=True),
                                       "cost": point.cost, "quality": point.quality}
    for name, cv in curves.items():
        points = [point_dict(p) for p in cv]
        baselines[name] = {**curve_figures(cv, f, single=False), "curve": points}
    baselines["oracle"].update(cost=best.cost, quality=best.quality)
    mine = curve_figures(router, f, single=False)
    zero, top = baselines["zero_router"]["aiq"], baselines["oracle"]["aiq"]
    ok = mine["aiq"] is not None and zero is not None and top is not None and top - zero > EPS
    closed = (mine["aiq"] - zero) / (top - zero) if ok else None
    logger.debug("report on %d prompts, %d tiers: %s", n, k, mine)
    extra: dict[str, Any] = {}
    if default_knob is not None:
        point = evaluate_choice(s, c, choose_tiers(np.asarray(proba), default_knob), default_knob)
        gained = pgr(point.quality, f.weak, f.strong) if abs(f.strong - f.weak) > EPS else None
        extra["at_default_knob"] = {**point_dict(point), "pgr": gained}
    return {
        **mine, **extra, "gap_closed": closed, "n": n, "tier_names": list(tier_names),
        "share_axis": "strong_share" if k == 2 else "cost_share",
        "weak_quality": f.weak, "strong_quality": f.strong, "oracle_quality": best.quality,
        "cost_range": [f.cost_min, f.cost_max],
        "curve": [point_dict(p) for p in router], "baselines": baselines,
    }
