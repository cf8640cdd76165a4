"""The cascade lever: try a cheaper tier first and escalate to the routed tier when unsure.

Opt-in (``cascade.enabled`` in the config, or ``"tierwise": {"cascade": true}`` per request) and
only for router decisions (a fixed A/B arm or a named model is the client's or experiment's
choice) that picked a tier above the cheapest one the policy allows. Not for streams: the draft
must be read whole before it can be judged, so a stream asking for it is refused (400) and the
config's default leaves streams alone.

Two checks, in order. (1) The router's prior: the probability that the draft tier is adequate
(the cumulative probability up to it, ``router_model.policy.adequacy``); below ``min_prior`` the
draft is not worth paying for and the routed tier answers alone. (2) The draft's answer, checked
without a second model: escalate when a choice is empty, was cut off (``finish_reason``
"content_filter", or "length" unless the client set ``max_tokens`` or ``max_completion_tokens``:
then stopping there is what it asked for, and the routed tier would stop there too), opens with a
refusal, or when the upstream returned token logprobs (the client asked with ``logprobs: true``,
or ``request_logprobs`` asked for it and the logprobs are then removed from the client's answer)
and their mean is below ``min_mean_logprob``. Escalation
goes straight to the routed tier: one extra call at most, and the routed tier's own cost is then
observed rather than guessed. The draft fails over only among the allowed tiers below the routed
one (``draft_allowed``); when none of them answers, the routed tier answers as it would without a
cascade (``reason`` "draft_failed").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from router_model.errors import UpstreamError
from router_model.policy import Policy
from router_model.tiers import Tier
from service.gateway.config import CascadeConfig
from service.gateway.decisions.source import Decision
from service.gateway.errors import BadRequest
from service.gateway.requests import KnobIn
from service.gateway.upstream.pool import Forwarded

logger = logging.getLogger(__name__)

#: How refusals open (lower case); a draft whose answer starts with one is escalated.
REFUSALS = (
    "i can't help", "i cannot help", "i can't assist", "i cannot assist", "i'm unable to",
    "i am unable to", "i'm sorry, but i can", "i am sorry, but i can", "sorry, i can't",
    "i cannot provide", "i can't provide", "i won't be able to",
)
_CUT_OFF = frozenset({"length", "content_filter"})

Send = Callable[[dict[str, Any], str], Awaitable[Forwarded]]
CostOf = Callable[[Tier, dict[str, Any]], Awaitable[float]]


@dataclass(frozen=True)
class CascadeOutcome:
    """What a cascade did: the tiers it called, in order, and why it stopped where it did."""

    routed: Tier
    tried: tuple[str, ...]
    escalated: bool
    reason: str
    drafted: bool
    #: USD paid for a draft that was thrown away (0 when the draft answered).
    draft_cost_usd: float = 0.0
    #: The gateway asked the draft for logprobs the client did not: drop them from the answer.
    strip_logprobs: bool = False

    def info(self) -> dict[str, Any]:
        """The ``tierwise.cascade`` member of the response."""
        return {"tried": list(self.tried), "escalated": self.escalated, "reason": self.reason}


def cascade_wanted(config: CascadeConfig, knob: KnobIn | None, stream: bool) -> bool:
    """Whether this request cascades: its ``tierwise.cascade``, else the config's default.

    Raises:
        BadRequest: when a stream asks for a cascade.
    """
    asked = knob.cascade if knob is not None else None
    if asked and stream:
        raise BadRequest("tierwise.cascade does not work with stream: true (the draft must be "
                         "read whole to be checked)", param="tierwise.cascade")
    return (config.enabled if asked is None else asked) and not stream


def draft_tier(tiers: Sequence[Tier], routed: str, decision: Decision,
               policy: Policy | None) -> Tier | None:
    """The cheapest tier the decision's policy allows below ``routed``; None when there is none."""
    names = [t.name for t in tiers]
    lo, hi = names.index(decision.min_tier), names.index(routed)
    allowed = policy.allowed_tiers if policy is not None else ()
    for tier in tiers[lo:hi]:
        if not allowed or tier.name in allowed:
            return tier
    return None


def draft_allowed(tiers: Sequence[Tier], routed: str, allowed: Collection[str]) -> tuple[str, ...]:
    """The tiers a draft may fail over to: the ``allowed`` ones below ``routed``. A draft answered
    by the routed tier (or one above) is no draft: judged doubtful it would be paid twice."""
    names = [t.name for t in tiers]
    return tuple(n for n in names[: names.index(routed)] if n in allowed)


def prior(tiers: Sequence[Tier], draft: Tier, decision: Decision) -> float:
    """The router's probability that ``draft`` is adequate: cumulative up to its tier."""
    upto = [t.name for t in tiers[: [t.name for t in tiers].index(draft.name) + 1]]
    return min(1.0, sum(decision.probabilities.get(n, 0.0) for n in upto))


def mean_logprob(choice: dict[str, Any]) -> float | None:
    """Mean token logprob of a choice's content (OpenAI ``logprobs.content``); None if absent."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    values = [t.get("logprob") for t in content or [] if isinstance(t, dict)]
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return sum(numbers) / len(numbers) if numbers else None


def client_limited(forward: dict[str, Any]) -> bool:
    """Whether the client capped the answer's length (``max_tokens``, ``max_completion_tokens``):
    then a draft that stopped at the cap ("length") is what the client asked for, and the routed
    tier would stop there too."""
    return any(forward.get(k) is not None for k in ("max_tokens", "max_completion_tokens"))


def answer_problem(doc: dict[str, Any], min_mean_logprob: float,
                   limited: bool = False) -> str | None:
    """Why a draft completion should be escalated (see the module docstring); None if it passes.

    ``limited``: the client set the length cap (``client_limited``), so a "length" finish is no
    reason to escalate (a "content_filter" one still is).
    """
    cut_off = _CUT_OFF - {"length"} if limited else _CUT_OFF
    choices = [c for c in doc.get("choices") or [] if isinstance(c, dict)]
    if not choices:
        return "empty"
    for choice in choices:
        found = choice.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        text = str(message.get("content") or "").strip()
        if choice.get("finish_reason") in cut_off:
            return "truncated"
        if not text and not message.get("tool_calls"):
            return "empty"
        if text.lower().replace("\u2019", "'").startswith(REFUSALS):
            return "refusal"
        mean = mean_logprob(choice)
        if mean is not None and mean < min_mean_logprob:
            return f"low_logprob ({mean:.2f} < {min_mean_logprob:g})"
    return None


@dataclass(frozen=True)
class Cascade:
    """Runs the draft of one request: ``first_try`` returns the accepted draft or None."""

    config: CascadeConfig
    tiers: tuple[Tier, ...]

    async def first_try(self, forward: dict[str, Any], routed: Tier, draft: Tier,
                        decision: Decision, send: Send,
                        cost_of: CostOf) -> tuple[Forwarded | None, CascadeOutcome]:
        """The draft answer when it passes the checks; None when the routed tier must answer.

        ``send`` forwards a body to a tier (failing over only below ``routed``: ``draft_allowed``),
        ``cost_of`` prices a thrown-away draft from its completion. Never raises for a failed
        draft: that is an escalation.
        """
        p = prior(self.tiers, draft, decision)
        if p < self.config.min_prior:
            reason = f"prior ({p:.3f} < {self.config.min_prior:g})"
            return None, CascadeOutcome(routed, (routed.name,), False, reason, drafted=False)
        strip = self.config.request_logprobs and not forward.get("logprobs")
        try:
            answer = await send({**forward, "logprobs": True} if strip else forward, draft.name)
        except UpstreamError as exc:
            logger.warning("cascade draft on %s failed: %s", draft.name, exc)
            tried = (draft.name, routed.name)
            return None, CascadeOutcome(routed, tried, True, "draft_failed", drafted=True)
        doc = answer.doc
        if doc is None or not answer.ok:
            problem = "draft_failed"
        else:
            problem = answer_problem(doc, self.config.min_mean_logprob,
                                     client_limited(forward)) or ""
        answered = answer.upstream.tier
        if not problem:
            return answer, CascadeOutcome(routed, (answered.name,), False, "accepted",
                                          drafted=True, strip_logprobs=strip)
        cost = await cost_of(answered, doc) if doc is not None and answer.ok else 0.0
        await answer.aclose()
        tried = (answered.name, routed.name)
        return None, CascadeOutcome(routed, tried, True, problem, drafted=True,
                                    draft_cost_usd=cost)

