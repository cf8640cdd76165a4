"""The decision policy: the one place where tier probabilities and prices become a tier.

The classifier predicts, for each prompt, ``p[k] = P(the cheapest adequate tier is k)``. Under the
usual monotone assumption (a tier that is adequate stays adequate one tier up), the cumulative sum
``a[k] = p[0] + ... + p[k]`` is the probability that tier ``k`` answers as well as the best tier
(within the labeling tolerance). The per-request knob ``quality`` in [0, 1] is the required value of
that probability: the policy picks the cheapest allowed tier with ``a[k] >= quality``. ``quality=0``
always picks the cheapest allowed tier; ``quality=1`` always picks the most expensive allowed tier.
Because ``a`` is non-decreasing in ``k``, a higher knob never picks a cheaper tier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_model.errors import InvalidPrompt
from router_model.tiers import Tier


@dataclass(frozen=True)
class Policy:
    """A request's routing policy; ``None`` fields fall back to the bundle's defaults."""

    quality: float | None = None
    min_tier: str | None = None
    max_tier: str | None = None
    allowed_tiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedPolicy:
    """A policy with defaults applied and tier names checked: what a decision reports."""

    quality: float
    min_tier: str
    max_tier: str
    allowed_tiers: tuple[str, ...]


def resolve_policy(
    policy: Policy | None, tiers: Sequence[Tier], default_quality: float
) -> ResolvedPolicy:
    """Apply defaults and validate a policy against a tier ladder.

    Raises:
        InvalidPrompt: when the knob is outside [0, 1], a tier name is unknown, or no tier is left.
    """
    policy = policy or Policy()
    names = [t.name for t in tiers]
    quality = default_quality if policy.quality is None else policy.quality
    if not (0.0 <= quality <= 1.0) or quality != quality:
        raise InvalidPrompt(f"quality must be within [0, 1], got {quality}")
    for name in (policy.min_tier, policy.max_tier, *policy.allowed_tiers):
        if name is not None and name not in names:
            raise InvalidPrompt(f"unknown tier {name!r}; known tiers: {', '.join(names)}")
    lo = names.index(policy.min_tier) if policy.min_tier else 0
    hi = names.index(policy.max_tier) if policy.max_tier else len(names) - 1
    allowed = [
        n for i, n in enumerate(names)
        if lo <= i <= hi and (not policy.allowed_tiers or n in policy.allowed_tiers)
    ]
    if not allowed:
        raise InvalidPrompt("min_tier, max_tier and allowed_tiers leave no tier to choose")
    return ResolvedPolicy(
        quality=float(quality), min_tier=names[lo], max_tier=names[hi], allowed_tiers=tuple(allowed)
    )


def policy_fields(policy: ResolvedPolicy) -> dict[str, Any]:
    """The applied policy, every default filled in: what responses and decision records show."""
    return {
        "quality": policy.quality,
        "min_tier": policy.min_tier,
        "max_tier": policy.max_tier,
        "allowed_tiers": list(policy.allowed_tiers),
    }


def allowed_mask(policy: ResolvedPolicy, tiers: Sequence[Tier]) -> NDArray[np.bool_]:
    """Boolean mask over the ladder of the tiers the policy allows."""
    return np.array([t.name in policy.allowed_tiers for t in tiers], dtype=bool)


def adequacy(proba: NDArray[np.floating]) -> NDArray[np.float64]:
    """Cumulative adequacy ``a[:, k] = P(tier k is adequate)`` from cheapest-adequate-tier probs."""
    a = np.cumsum(np.asarray(proba, dtype=np.float64), axis=1)
    # the top tier is adequate by definition of the label; guard float drift
    a[:, -1] = 1.0
    return np.clip(a, 0.0, 1.0)


def choose_tiers(
    proba: NDArray[np.floating], quality: float, allowed: NDArray[np.bool_] | None = None
) -> NDArray[np.int64]:
    """Vectorised decision: per row, the cheapest allowed tier whose adequacy reaches ``quality``.

    If no allowed tier reaches it (the top tiers are excluded), the allowed tier with the highest
    adequacy is chosen, which is the most expensive allowed one.
    """
    a = adequacy(proba)
    k = a.shape[1]
    mask = np.ones(k, dtype=bool) if allowed is None else allowed
    # 1e-12 so that quality=1.0 is reached by the top tier despite float sums
    ok = (a >= quality - 1e-12) & mask[None, :]
    first_ok = np.where(ok.any(axis=1), ok.argmax(axis=1), -1)
    fallback = int(np.flatnonzero(mask)[-1])
    return np.where(first_ok >= 0, first_ok, fallback).astype(np.int64)


def choose_tier(proba: Sequence[float], quality: float, allowed: Sequence[bool]) -> int:
    """``choose_tiers`` for one row, in plain Python: the same decision without numpy's overhead.

    The running sum adds in the order ``np.cumsum`` does, so the adequacies are the same floats.

    Raises:
        ValueError: when no tier is allowed.
    """
    threshold = quality - 1e-12
    last = len(proba) - 1
    total, fallback = 0.0, -1
    for k, p in enumerate(proba):
        total += p
        if not allowed[k]:
            continue
        # the top tier is adequate by definition of the label; clipped like ``adequacy``
        if (1.0 if k == last else min(max(total, 0.0), 1.0)) >= threshold:
            return k
        fallback = k
    if fallback < 0:
        raise ValueError("no tier is allowed")
    return fallback


def knob_for_top_share(proba: NDArray[np.floating], share: float) -> float:
    """The largest knob sending at most ``share`` of these rows to the top tier.

    A row goes to the top tier when no cheaper tier's adequacy reaches the knob, that is when the
    adequacy of the tier below the top is under it; so the knob is the order statistic of those
    adequacies at rank ``floor(share * n)``.
    """
    return knob_for_share_below_top(adequacy(proba)[:, -2], share)


def knob_for_share_below_top(below_top: NDArray[np.floating], share: float) -> float:
    """``knob_for_top_share`` from each row's adequacy of the tier below the top (``a[:, -2]``),
    which is all it depends on (1.0 for no rows: nothing to budget against)."""
    ordered = np.sort(np.asarray(below_top, dtype=np.float64))
    rank = int(np.floor(share * len(ordered) + 1e-9))
    return 1.0 if rank >= len(ordered) else float(ordered[rank])
