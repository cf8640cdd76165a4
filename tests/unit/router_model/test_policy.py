"""The decision policy: knob semantics, tier constraints, monotonicity."""

from __future__ import annotations

import numpy as np
import pytest

from router_model.errors import InvalidPrompt
from router_model.policy import Policy, adequacy, allowed_mask, choose_tiers, resolve_policy
from router_model.tiers import Tier

TIERS = (
    Tier("small", "m-small", 0.1, 0.3),
    Tier("medium", "m-medium", 1.0, 4.0),
    Tier("large", "m-large", 5.0, 15.0),
)


def test_adequacy_is_cumulative_and_top_is_one() -> None:
    a = adequacy(np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(a, [[0.5, 0.8, 1.0], [0.0, 0.0, 1.0]])


def test_cheapest_tier_reaching_the_knob() -> None:
    proba = np.array([[0.5, 0.3, 0.2]])  # adequacy 0.5, 0.8, 1.0
    assert choose_tiers(proba, 0.0)[0] == 0
    assert choose_tiers(proba, 0.5)[0] == 0
    assert choose_tiers(proba, 0.51)[0] == 1
    assert choose_tiers(proba, 0.8)[0] == 1
    assert choose_tiers(proba, 0.81)[0] == 2
    assert choose_tiers(proba, 1.0)[0] == 2


def test_higher_knob_never_picks_cheaper_tier() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=200)
    prev = choose_tiers(proba, 0.0)
    for q in np.linspace(0, 1, 41):
        cur = choose_tiers(proba, float(q))
        assert (cur >= prev).all()
        prev = cur


def test_allowed_mask_limits_choice() -> None:
    proba = np.array([[0.9, 0.05, 0.05]])
    pol = resolve_policy(Policy(quality=0.5, min_tier="medium"), TIERS, 0.7)
    assert choose_tiers(proba, pol.quality, allowed_mask(pol, TIERS))[0] == 1
    pol = resolve_policy(Policy(quality=0.99, max_tier="medium"), TIERS, 0.7)
    # no allowed tier reaches 0.99: the most capable allowed tier is chosen
    assert choose_tiers(np.array([[0.1, 0.1, 0.8]]), pol.quality, allowed_mask(pol, TIERS))[0] == 1
    pol = resolve_policy(Policy(quality=0.0, allowed_tiers=("large",)), TIERS, 0.7)
    assert choose_tiers(proba, pol.quality, allowed_mask(pol, TIERS))[0] == 2


def test_resolve_defaults_and_errors() -> None:
    pol = resolve_policy(None, TIERS, 0.7)
    assert pol.quality == 0.7 and pol.allowed_tiers == ("small", "medium", "large")
    for bad in (Policy(quality=1.5), Policy(quality=-0.1), Policy(quality=float("nan")),
                Policy(min_tier="huge"), Policy(allowed_tiers=("nope",)),
                Policy(min_tier="large", max_tier="small")):
        with pytest.raises(InvalidPrompt):
            resolve_policy(bad, TIERS, 0.7)
