"""A completion's state in flight and its ``TrafficRecord``: usage, cost and the savings ledger.

The ledger (``spend``) splits what a request saved against the no-lever baseline (the request
as the client sent it, answered once at list price by the top tier, or by the named model for a
pass-through request) into routing's share and each other lever's, in this order: routing
(baseline tier → routed tier; nothing for pass-through, where the client chose the model),
trimming (the routed tier on the full prompt → on the trimmed one), cascade (the routed tier
alone → the calls made). Each step's dollars are the difference between its two sides, so the
parts add up exactly to ``top_tier_cost_usd - cost_usd``. A cache hit costs nothing and saved
what the request would otherwise have cost: its answer's tokens at its tier's prices (not what was
spent when the answer was bought, which may include a cascade's thrown-away draft)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from router_model.chat import ChatMessage
from router_model.records import TrafficRecord
from router_model.router import prompt_digest
from router_model.tiers import Tier
from service.gateway.levers.cache.store import CacheKey, Hit
from service.gateway.levers.cascade import CascadeOutcome
from service.gateway.planning import Plan
from service.gateway.requests import ChatBody
from service.gateway.upstream.pool import Forwarded

#: Price units: tier prices are USD per 1M tokens.
PER_TOKEN = 1e-6


@dataclass
class Call:
    """One request in flight: its plan and what happened to it so far."""

    body: ChatBody
    messages: tuple[ChatMessage, ...]
    scored: str
    plan: Plan
    start: float
    features: asyncio.Task[list[float]] | None = None
    answer: Forwarded | None = None
    recorded: bool = field(default=False)
    trimmed: int = 0
    cache_key: CacheKey | None = None
    hit: Hit | None = None
    cascade: CascadeOutcome | None = None
    #: Who asked (``semantic_cache.tenant_of``): feedback is taken from the same key only.
    tenant: str = ""
    #: The body forwarded upstream (for shadow labels: ``service.gateway.shadow``).
    forward: dict[str, Any] | None = None
    #: The request's trace span when tracing is on (``service.gateway.tracing``).
    span: Span | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    source: str


@dataclass(frozen=True)
class Spend:
    """What a request paid, its no-lever baseline, and the dollars each lever saved."""

    cost_usd: float
    top_tier_cost_usd: float
    levers: dict[str, float]


def spend(answered: Tier, usage: Usage, baseline: Tier, *, trimmed: int = 0,
          cascade: CascadeOutcome | None = None) -> Spend:
    """The ledger of an upstream answer by ``answered`` with ``usage`` (the answer's tokens);
    ``baseline`` prices the no-lever baseline (``baseline_tier``).

    ``trimmed`` input tokens were removed before forwarding (counted with the router's tokenizer,
    so their price is an estimate). Without a cascade the routed tier is the one that answered
    (after any failover); with one it is the cascade's routed tier unless it escalated.
    """
    routed = answered
    if cascade is not None and cascade.drafted and not cascade.escalated:
        routed = cascade.routed
    paid = answered.cost(usage.input_tokens, usage.output_tokens)
    paid += cascade.draft_cost_usd if cascade is not None else 0.0
    levers: dict[str, float] = {}
    if trimmed:
        levers["trim"] = trimmed * routed.input_price * PER_TOKEN
    if cascade is not None and cascade.drafted:
        levers["cascade"] = routed.cost(usage.input_tokens, usage.output_tokens) - paid
    top = baseline.cost(usage.input_tokens + trimmed, usage.output_tokens)
    return Spend(paid, top, levers)


def cache_spend(answered: Tier, usage: Usage, baseline: Tier, *, trimmed: int = 0) -> Spend:
    """The ledger of a cached answer of ``answered`` with ``usage``: the ledger ``spend`` writes
    for that answer from upstream (trimming's and routing's parts alike), with what it would have
    paid saved by the cache instead: nothing paid."""
    upstream = spend(answered, usage, baseline, trimmed=trimmed)
    return Spend(0.0, upstream.top_tier_cost_usd, {**upstream.levers, "cache": upstream.cost_usd})


def baseline_tier(source: str, tier: str, tiers: Sequence[Tier]) -> Tier:
    """The tier the no-lever baseline is priced at: for a pass-through request (``source``) the
    named ``tier`` (the client, not routing, chose it), else the top tier."""
    if source == "passthrough":
        return next(t for t in tiers if t.name == tier)
    return tiers[-1]


def usage_of(reported: Any) -> Usage | None:
    """The upstream's ``usage`` member as ``Usage``; None when it gives no prompt tokens."""
    if isinstance(reported, dict) and isinstance(reported.get("prompt_tokens"), int):
        completion = reported.get("completion_tokens")
        return Usage(reported["prompt_tokens"],
                     completion if isinstance(completion, int) else 0, "upstream")
    return None


def build_record(call: Call, status: int, usage: Usage, tiers: Sequence[Tier],
                 features: list[float], store_prompts: bool) -> TrafficRecord:
    """The request's ``TrafficRecord`` (cost, baseline and levers from ``spend``)."""
    plan, answer, d = call.plan, call.answer, call.plan.decision
    tier: Tier | None = answer.upstream.tier if answer is not None else None
    baseline = baseline_tier(plan.source, plan.tier, tiers)
    if call.hit is not None:
        tier = next(t for t in tiers if t.name == call.hit.tier)
        money = cache_spend(tier, usage, baseline, trimmed=call.trimmed)
    elif tier is not None:
        money = spend(tier, usage, baseline, trimmed=call.trimmed, cascade=call.cascade)
    else:  # nothing answered; a cascade's draft may still have been paid for
        paid = call.cascade.draft_cost_usd if call.cascade is not None else 0.0
        money = Spend(paid, 0.0, {})
    policy = plan.policy
    return TrafficRecord(
        decision_id=plan.decision_id, arm=plan.arm, propensity=plan.propensity,
        source="cache" if call.hit is not None else plan.source,
        requested_model=call.body.model, decided_tier=plan.tier,
        tier=tier.name if tier else "", model=tier.model if tier else "",
        router_tier=d.tier if d else "", status=status, stream=call.body.stream,
        failovers=answer.failovers if answer else 0, fail_open=plan.source == "fail_open",
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        usage_source="upstream" if usage.source == "upstream" else "estimated",
        cost_usd=money.cost_usd, top_tier_cost_usd=money.top_tier_cost_usd, levers=money.levers,
        latency_ms=(time.perf_counter() - call.start) * 1000.0,
        router_latency_ms=d.latency_ms if d else None,
        quality=d.quality if d else (policy.quality if policy else None),
        min_tier=d.min_tier if d else None, max_tier=d.max_tier if d else None,
        probabilities=d.probabilities if d else {},
        model_version=d.model_version if d else None,
        feature_version=d.feature_version if d and features else None, features=features,
        prompt_sha256=prompt_digest(call.scored) if call.scored else "",
        prompt=call.scored if store_prompts and call.scored else None, tenant=call.tenant,
        cache_layer=call.hit.layer if call.hit is not None else "",
        cache_similarity=call.hit.similarity if call.hit is not None else None,
    )


def plan_attributes(plan: Plan) -> dict[str, str]:
    """The route span's attributes: where the plan sends the request, and why."""
    return {"tierwise.decision_id": plan.decision_id, "tierwise.arm": plan.arm,
            "tierwise.source": plan.source, "tierwise.tier": plan.tier}


def record_attributes(record: TrafficRecord) -> dict[str, str | int | float]:
    """The request span's last attributes: what its traffic record says."""
    return {"tierwise.decision_id": record.decision_id, "tierwise.arm": record.arm,
            "tierwise.source": record.source, "tierwise.tier": record.tier,
            "tierwise.model": record.model, "tierwise.failovers": record.failovers,
            "tierwise.cost_usd": record.cost_usd, "http.response.status_code": record.status,
            "gen_ai.usage.input_tokens": record.input_tokens,
            "gen_ai.usage.output_tokens": record.output_tokens}


def answer_text(doc: dict[str, Any]) -> str:
    """The answer text of a completion: every choice's message content (the upstream pool
    refuses other shapes; here they would count as no text, never as an error)."""
    choices = doc.get("choices")
    found = [c.get("message") for c in choices if isinstance(c, dict)] if isinstance(
        choices, list) else []
    return "".join(str(m.get("content") or "") for m in found if isinstance(m, dict))
