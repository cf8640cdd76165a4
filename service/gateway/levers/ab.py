"""A/B arms of the gateway: which arm (the router, or a fixed tier) serves a ``tierwise-auto`` call.

Assignment is sticky: the same user or session id always lands in the same arm (a salted sha256
of the id, read as a number in [0, 1), picks the arm by cumulative weight). Requests without an id
are assigned at random with the same weights. Either way the recorded propensity is the arm's
share of the split, the probability with which the request got that arm (and, since each arm's
tier choice is deterministic, that tier).

A fixed arm's tier never overrides the request's tier limits (``min_tier``, ``max_tier``,
``allowed_tiers``): when they exclude it, the arm answers with the nearest tier they allow
(``service.gateway.planning``). That tier is still a deterministic function of the arm and the
request, so the propensity stays the arm's share; the record's ``decided_tier`` shows it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

ROUTER_ARM = "router"


@dataclass(frozen=True)
class Arm:
    """One arm: ``tier`` is None for the router arm, else the tier it always uses."""

    name: str
    tier: str | None
    weight: float


@dataclass(frozen=True)
class Assignment:
    """The arm a request got, with the probability it had of getting it."""

    arm: Arm
    propensity: float
    sticky: bool


class ArmAssigner:
    """Assigns requests to arms by a salted hash of the user id (random when there is none)."""

    def __init__(self, arms: Sequence[Arm], salt: str, rng: random.Random | None = None) -> None:
        if not arms:
            raise ValueError("need at least one arm")
        total = sum(a.weight for a in arms)
        if total <= 0:
            raise ValueError("arm weights must sum to more than 0")
        self._arms = tuple(arms)
        self._shares = tuple(a.weight / total for a in arms)
        self._salt = salt
        # not for security: only spreads anonymous requests over the arms
        self._rng = rng or random.Random()  # noqa: S311

    @classmethod
    def single_router(cls) -> ArmAssigner:
        """No experiment: every request goes to the router arm with propensity 1."""
        return cls([Arm(ROUTER_ARM, None, 1.0)], salt="")

    @property
    def arms(self) -> tuple[Arm, ...]:
        return self._arms

    def assign(self, unit_id: str | None) -> Assignment:
        """The arm of a request whose user/session id is ``unit_id`` (None: random)."""
        if unit_id:
            point = self._hash_point(unit_id)
        else:
            point = self._rng.random()
        cumulative = 0.0
        for arm, share in zip(self._arms, self._shares, strict=True):
            cumulative += share
            if point < cumulative:
                return Assignment(arm, share, sticky=bool(unit_id))
        # float rounding can leave the top of [0, 1) past the last cumulative sum
        return Assignment(self._arms[-1], self._shares[-1], sticky=bool(unit_id))

    def _hash_point(self, unit_id: str) -> float:
        digest = hashlib.sha256(f"{self._salt}\0{unit_id}".encode("utf-8", "surrogatepass"))
        return int.from_bytes(digest.digest()[:8], "big") / 2**64
