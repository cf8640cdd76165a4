"""Off-policy estimates for ``tierwise ab-report``: the router at other knobs, from logged traffic.

The tier ladder (cheapest first) is read from what the traffic paid, never from the order of a
record's ``probabilities`` (the store keeps them as JSON with sorted keys: alphabetical order).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.ab_stats import MIN_LABELED, N_RESAMPLES, REFERENCE_ARM
from router_model.policy import choose_tiers
from training.bootstrap import draw_rows, mean_ci
from training.traffic import Decision

F64 = NDArray[np.float64]


def tier_ladder(decisions: Sequence[Decision]) -> list[str] | str:
    """The tiers the router scored, cheapest first, or why their order is unknown.

    A tier's price is measured against the top tier on the same request: ``cost_usd /
    top_tier_cost_usd`` of answered requests with no lever, cache hit or pass-through in the way
    (there the baseline is the top tier, so the ratio is the tier's relative price). Tiers are
    ordered by the median ratio; a scored tier never seen answering cannot be placed.
    """
    names: set[str] = set()
    ratios: dict[str, list[float]] = defaultdict(list)
    for d in decisions:
        r = d.record
        names.update(r.probabilities)
        if (r.status < 400 and r.tier and r.source not in ("passthrough", "cache")
                and not r.levers and r.top_tier_cost_usd > 0):
            ratios[r.tier].append(r.cost_usd / r.top_tier_cost_usd)
    unseen = sorted(names - set(ratios))
    if unseen:
        return f"tier order unknown: {unseen} never answered a priced request"
    price = {t: float(np.median(ratios[t])) for t in names}
    ladder = sorted(names, key=lambda t: price[t])
    if len(set(price.values())) < len(price):
        return f"tier order unknown: tiers {ladder} cost the same relative to the top tier"
    return ladder


def logging_propensity(decisions: Sequence[Decision]) -> Callable[[Decision, str], float]:
    """``pi0(tier | request)`` of the A/B experiment that logged ``decisions``.

    The arm is drawn with its weight (the record's ``propensity``); the router arm then answers
    with ``router_tier`` and a fixed arm with its tier, so a tier's probability is the sum of the
    weights of the arms that would have picked it for that request.
    """
    weights: dict[str, float] = {}
    fixed: dict[str, str] = {}
    for d in decisions:
        weights[d.record.arm] = d.record.propensity
        if d.record.source == "fixed_arm":
            fixed[d.record.arm] = d.record.decided_tier

    def pi0(d: Decision, tier: str) -> float:
        p = sum(w for arm, w in weights.items() if arm in fixed and fixed[arm] == tier)
        if REFERENCE_ARM in weights and d.record.router_tier == tier:
            p += weights[REFERENCE_ARM]
        return p

    return pi0


def off_policy(decisions: Sequence[Decision], knobs: Sequence[float], seed: int,
               min_labeled: int = MIN_LABELED) -> dict[str, Any]:
    """IPS and DR estimates of the router's cost and quality at other knobs, with bootstrap CIs.

    The candidate routes each logged request from its stored ``probabilities`` (what the router
    scored), laid out on the tier ladder (``tier_ladder``), at the knob. DR's direct model is each
    tier's mean observed score (and cost share).
    """
    logged = [d for d in decisions if d.record.status < 400 and d.record.probabilities
              and d.score is not None and d.record.source != "cache"]
    if len(logged) < max(min_labeled, 1):
        return {"verdict": f"not enough data: {len(logged)} labeled requests with probabilities "
                           f"(need {min_labeled})"}
    tiers = tier_ladder(decisions)
    if isinstance(tiers, str):
        return {"verdict": f"not enough data: {tiers}"}
    proba = np.asarray([[d.record.probabilities.get(t, 0.0) for t in tiers] for d in logged])
    pi0 = logging_propensity(logged)
    p_log = np.asarray([max(pi0(d, d.record.tier), 1e-12) for d in logged])
    q = np.asarray([d.score for d in logged], dtype=np.float64)
    cost = np.asarray([d.record.cost_usd for d in logged], dtype=np.float64)
    tier_idx = np.asarray([tiers.index(d.record.tier) if d.record.tier in tiers else -1
                           for d in logged])
    q_hat = np.asarray([q[tier_idx == k].mean() if (tier_idx == k).any() else q.mean()
                        for k in range(len(tiers))])
    # one draw for every knob and figure: their intervals are paired over the same resamples
    boot = draw_rows(len(logged), N_RESAMPLES, np.random.default_rng(seed))
    out: dict[str, Any] = {"n": len(logged), "tiers": tiers, "knobs": {}}
    for knob in knobs:
        choice = choose_tiers(proba, float(knob))
        match = (choice == tier_idx).astype(np.float64)
        ips = match * q / p_log
        dr = q_hat[choice] + match * (q - q_hat[tier_idx]) / p_log
        out["knobs"][f"{knob:g}"] = {
            "strong_share": float((choice == len(tiers) - 1).mean()),
            "matched": int(match.sum()),
            "quality_ips": _ci(ips, boot), "quality_dr": _ci(dr, boot),
            "cost_per_request_ips": _ci(match * cost / p_log, boot),
        }
    return out


def _ci(values: F64, boot: NDArray[np.int64]) -> dict[str, float]:
    lo, hi = mean_ci(values, boot)
    return {"mean": float(values.mean()), "lo": lo, "hi": hi}
