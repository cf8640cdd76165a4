"""Which tier a chat request goes to first, and which tiers it may be answered by: ``Planner``.

A request's tier limits (``tierwise.min_tier``, ``max_tier``, ``allowed_tiers``) are hard
limits, whoever picks the tier: the router keeps to them itself; a fixed A/B arm and the
fail-open ``default_tier`` are moved to the nearest allowed tier when the limits exclude them
(the tier itself, then the tiers above it nearest first, then those below it nearest first: the
failover order); and ``Plan.allowed`` bounds failover (``service.gateway.upstream.pool``), so no
answer ever
comes from a tier the request excluded. A request that names a model (pass-through) may only be
answered by that model: it never fails over (the client asked for that model, not for a tier;
``tierwise-auto`` with ``min_tier`` is the way to ask for "this tier or better").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router_model.chat import ChatMessage
from router_model.errors import InvalidPrompt
from router_model.policy import Policy, resolve_policy
from router_model.records import DecisionSource as Source
from router_model.tiers import Tier, ladder_order
from service.gateway.config import GatewayConfig
from service.gateway.decisions.source import Decision, DecisionSource, RouterUnavailable
from service.gateway.errors import BadRequest, ModelNotFound
from service.gateway.levers.ab import ArmAssigner
from service.gateway.levers.budget import BudgetKnob
from service.gateway.requests import AUTO_MODEL, ChatBody, request_policy, unit_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Which tier a request goes to first, why, and which tiers may answer it."""

    decision_id: str
    arm: str
    propensity: float
    source: Source
    tier: str
    decision: Decision | None
    policy: Policy | None
    #: The tiers the request may be answered by (failover stays among them), cheapest first.
    allowed: tuple[str, ...]


def allowed_tiers(policy: Policy, tiers: Sequence[Tier]) -> tuple[str, ...]:
    """The tiers a policy's ``min_tier``, ``max_tier`` and ``allowed_tiers`` leave, cheapest first.

    Raises:
        BadRequest: when they leave no tier.
    """
    try:  # the router's own rule (router_model.policy), so both sides agree on the set
        return resolve_policy(policy, tiers, default_quality=0.0).allowed_tiers
    except InvalidPrompt as exc:
        raise BadRequest(str(exc), param="tierwise", code="invalid_value") from None


def nearest_allowed(tiers: Sequence[Tier], tier: str, allowed: Sequence[str]) -> str:
    """``tier`` when allowed, else the first allowed tier in its failover order."""
    return next(n for n in ladder_order([t.name for t in tiers], tier) if n in allowed)


@dataclass(frozen=True)
class Planner:
    """Plans ``tierwise-auto`` requests (A/B arm, router, fail-open) and pass-through ones."""

    config: GatewayConfig
    decisions: DecisionSource
    assigner: ArmAssigner
    #: The budget knob (``budget.top_share``), None without a budget.
    budget: BudgetKnob | None = None

    @property
    def tiers(self) -> tuple[Tier, ...]:
        return self.config.tier_ladder()

    def tier_for_model(self, model: str) -> Tier:
        """The tier a pass-through request names by model or tier name.

        Raises:
            ModelNotFound: when no tier has that model or name.
        """
        for tier in self.tiers:
            if model in (tier.model, tier.name):
                return tier
        raise ModelNotFound(
            f"the model {model!r} does not exist; use {AUTO_MODEL!r} or one of "
            f"{[t.model for t in self.tiers]}"
        )

    def budget_knob(self) -> float | None:
        """The budget's knob capped at the default one (``default_quality``, else the router's),
        so a budget never raises the spend; None without a budget or a full enough window."""
        knob = self.budget.knob() if self.budget is not None else None
        if knob is None:
            return None
        cap = self.config.default_quality
        cap = self.decisions.default_quality() if cap is None else cap
        return knob if cap is None else min(knob, cap)

    def default_quality(self) -> float | None:
        """The knob of a request that sets none: the budget's (``budget_knob``) when it has one,
        else ``default_quality`` (None: the router's default)."""
        knob = self.budget_knob()
        return knob if knob is not None else self.config.default_quality

    async def plan(
        self, body: ChatBody, headers: Mapping[str, str], messages: tuple[ChatMessage, ...]
    ) -> Plan:
        """The tier to try first: the named one, a fixed arm's, the router's, or the default.

        Raises:
            ModelNotFound, BadRequest, InvalidPrompt: when the request cannot be routed.
        """
        tiers = self.tiers
        names = tuple(t.name for t in tiers)
        if body.model != AUTO_MODEL:
            tier = self.tier_for_model(body.model)
            return Plan(uuid.uuid4().hex, "passthrough", 1.0, "passthrough", tier.name, None,
                        None, (tier.name,))
        policy = request_policy(body, headers, names, self.default_quality())
        allowed = allowed_tiers(policy, tiers)
        assignment = self.assigner.assign(unit_id(body, headers))
        decision: Decision | None
        try:
            decision = await self.decisions.decide(messages, policy)
        except RouterUnavailable as exc:
            logger.warning("router unavailable (%s): failing open", exc)
            decision = None
        if decision is not None and self.budget is not None:
            self.budget.observe(decision.probabilities, decision.model_version)
        arm = assignment.arm
        source: Source
        if arm.tier is not None:
            source, tier_name = "fixed_arm", nearest_allowed(tiers, arm.tier, allowed)
        elif decision is None:
            source = "fail_open"
            tier_name = nearest_allowed(tiers, self.config.default_tier, allowed)
        else:
            source, tier_name = "router", decision.tier
        decision_id = decision.decision_id if decision is not None else uuid.uuid4().hex
        return Plan(decision_id, arm.name, assignment.propensity, source, tier_name, decision,
                    policy, allowed)
