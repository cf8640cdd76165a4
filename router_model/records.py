"""Records shared by serving and retraining: one ``TrafficRecord`` per gateway request, feedback.

The gateway writes them (``service.store``) and retraining reads them; this module is the only
channel between the two sides. ``features`` holds the exact float32 feature vector the router
scored (``router_model.features``), so retraining needs no prompt text; ``prompt`` is filled only
when the gateway config allows storing prompts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RECORD_SCHEMA_VERSION = 1

#: How the answering tier was picked: by the router, by a fixed A/B arm, by the client naming a
#: model (pass-through), the configured default because the router could not be reached, or
#: "cache": answered from the gateway's response cache (no upstream call, nothing to learn).
DecisionSource = Literal["router", "fixed_arm", "passthrough", "fail_open", "cache"]

#: The cost levers besides routing whose dollars a record itemises in ``levers``.
Lever = Literal["cache", "trim", "batch", "cascade"]
LEVERS: tuple[str, ...] = get_args(Lever)

#: The savings ledger's parts. The tier choice's own saving (top tier against the tier chosen,
#: before levers) goes to whoever chose: "routing" only when the router did; a fixed A/B arm's
#: ("ab_fixed_arm") and a fail-open default's ("fail_open") are theirs. Then each lever's.
LEDGER: tuple[str, ...] = ("routing", "ab_fixed_arm", "fail_open", *LEVERS)

#: The arm names that are not fixed A/B arms: the router arm and pass-through traffic.
NOT_FIXED_ARMS: tuple[str, ...] = ("router", "passthrough")


def choice_part(source: str, arm: str, fail_open: bool) -> str:
    """The ledger part credited with a request's tier choice (see ``LEDGER``).

    A cache hit (``source == "cache"``) keeps its arm, so a fixed arm's cached answer is still
    the fixed arm's choice.
    """
    if fail_open:
        return "fail_open"
    if source == "fixed_arm" or (source == "cache" and arm not in NOT_FIXED_ARMS):
        return "ab_fixed_arm"
    return "routing"


def split_ledger(saved: float, levers: Mapping[str, float], part: str) -> dict[str, float]:
    """``saved`` USD split into every ``LEDGER`` part: each lever's own dollars, and the rest
    (the tier choice's saving) under ``part`` (``choice_part``); the parts add up to ``saved``."""
    parts = dict.fromkeys(LEDGER, 0.0)
    for lever, usd in levers.items():
        parts[lever] += usd
    parts[part] += saved - sum(levers.values())
    return parts


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (what every record stores)."""
    return datetime.now(UTC)


class TrafficRecord(BaseModel):
    """One answered (or failed) gateway request, committed before its response was returned.

    The savings ledger: ``cost_usd`` is what was paid (every upstream call, at the price paid);
    ``top_tier_cost_usd`` is the no-lever baseline (the request as the client sent it, answered
    once at list price by the top tier, or by the model it named for a pass-through request, so
    routing saves nothing there); ``levers`` holds the dollars each other lever saved.
    ``savings_usd = top_tier_cost_usd - cost_usd`` splits exactly into ``choice_savings_usd``
    (top tier against the tier chosen, both without levers; routing's only when the router
    chose, see ``LEDGER``) plus ``sum(levers.values())``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    schema_version: int = RECORD_SCHEMA_VERSION
    decision_id: str = Field(min_length=1, max_length=64)
    created_at: datetime = Field(default_factory=utc_now)
    #: A/B arm ("router", a fixed arm's name, or "passthrough") and the probability with which
    #: this arm and tier were chosen (1.0 for deterministic choices, the split weight otherwise).
    arm: str
    propensity: float = Field(ge=0.0, le=1.0)
    source: DecisionSource
    requested_model: str
    #: The tier the decision picked, and the tier and upstream model that finally answered
    #: (they differ after a failover). Empty when no upstream answered.
    decided_tier: str
    tier: str
    model: str
    #: What the router would pick for this request, also on fixed arms (counterfactual); empty
    #: when the router was not asked or could not be reached.
    router_tier: str = ""
    status: int = Field(ge=100, le=599)
    stream: bool = False
    failovers: int = Field(default=0, ge=0)
    fail_open: bool = False
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    #: "upstream" when the provider reported usage, "estimated" when counted with the router's
    #: tokenizer (for example a stream without usage).
    usage_source: Literal["upstream", "estimated"] = "upstream"
    cost_usd: float = Field(default=0.0, ge=0.0)
    #: The same tokens at the top tier's prices: the always-top-tier baseline of the savings.
    top_tier_cost_usd: float = Field(default=0.0, ge=0.0)
    latency_ms: float = Field(default=0.0, ge=0.0)
    router_latency_ms: float | None = None
    quality: float | None = None
    min_tier: str | None = None
    max_tier: str | None = None
    probabilities: dict[str, float] = Field(default_factory=dict)
    model_version: str | None = None
    feature_version: int | None = None
    features: list[float] = Field(default_factory=list)
    prompt_sha256: str = ""
    prompt: str | None = None
    #: USD saved by each lever other than routing (keys from ``LEVERS``; an absent lever saved
    #: nothing). "cascade" may be negative: the cheap try plus the escalation cost more than the
    #: routed tier alone would have.
    levers: dict[str, float] = Field(default_factory=dict)
    #: Who asked: the sha256 of ``"Bearer " + the client's key`` (never the key itself;
    #: ``service.gateway.tenants.tenant_of``), whatever the header's spelling of the scheme.
    #: Feedback on the decision is taken only from the same key. Empty in records written
    #: before it was kept: those take no feedback.
    tenant: str = Field(default="", max_length=64)
    #: For a ``source: "cache"`` row: the cache layer that answered ("exact", "canonical",
    #: "semantic") and the similarity of the match (1.0 for exact and canonical); "" and None
    #: otherwise.
    cache_layer: str = Field(default="", max_length=16)
    cache_similarity: float | None = None

    @field_validator("levers")
    @classmethod
    def _known_levers(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(LEVERS))
        if unknown:
            raise ValueError(f"unknown levers {unknown}; levers are {list(LEVERS)}")
        if not all(np.isfinite(v) for v in value.values()):
            raise ValueError("lever savings must be finite numbers")
        return value

    @field_validator("features")
    @classmethod
    def _float32(cls, value: list[float]) -> list[float]:
        # the vector is float32 (what the classifier scored): hold exactly those values
        return [float(x) for x in np.asarray(value, dtype=np.float32)]

    @property
    def savings_usd(self) -> float:
        """What this request saved against sending it to the top tier."""
        return self.top_tier_cost_usd - self.cost_usd

    @property
    def choice_savings_usd(self) -> float:
        """The tier choice's share of ``savings_usd``: the top tier against the tier chosen."""
        return self.savings_usd - sum(self.levers.values())

    @property
    def routing_savings_usd(self) -> float:
        """Routing's own share of ``savings_usd``: the choice's, when the router chose, else 0."""
        if choice_part(self.source, self.arm, self.fail_open) != "routing":
            return 0.0
        return self.choice_savings_usd

    @property
    def ledger(self) -> dict[str, float]:
        """``savings_usd`` split into every ``LEDGER`` part (they add up to it)."""
        return split_ledger(self.savings_usd, self.levers,
                            choice_part(self.source, self.arm, self.fail_open))

    def features_array(self) -> NDArray[np.float32]:
        """The feature vector as float32 (exactly the values the router scored)."""
        return np.asarray(self.features, dtype=np.float32)

    def features_blob(self) -> bytes:
        """The feature vector as little-endian float32 bytes (the store's column format)."""
        return self.features_array().astype("<f4").tobytes()

    @staticmethod
    def features_from_blob(blob: bytes | None) -> list[float]:
        """Inverse of ``features_blob``."""
        if not blob:
            return []
        return [float(x) for x in np.frombuffer(blob, dtype="<f4")]


class FeedbackRecord(BaseModel):
    """A label for one decision: a score in [0, 1], or thumbs up (1.0) / down (0.0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision_id: str = Field(min_length=1, max_length=64)
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _one_label(self) -> FeedbackRecord:
        if (self.score is None) == (self.thumbs is None):
            raise ValueError("give exactly one of 'score' (0..1) and 'thumbs' ('up' or 'down')")
        return self

    @property
    def value(self) -> float:
        """The label as a number in [0, 1] (thumbs up = 1, down = 0)."""
        if self.score is not None:
            return self.score
        return 1.0 if self.thumbs == "up" else 0.0


class JudgeLabel(BaseModel):
    """A judge's grade of one tier's answer to a recorded decision's prompt (a shadow label).

    Kept apart from client feedback (``FeedbackRecord``): ``score`` is the judge's rating mapped
    to [0, 1] (``router_model.judge``). ``cost_usd`` is what the shadow call to ``tier`` cost (0
    for the tier that answered the client: already paid) and ``judge_cost_usd`` what grading it
    cost; together they are the shadow spend of the savings ledger.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    decision_id: str = Field(min_length=1, max_length=64)
    tier: str = Field(min_length=1)
    model: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)
    rating: int = Field(ge=1, le=10)
    judge: str = Field(min_length=1)
    cost_usd: float = Field(default=0.0, ge=0.0)
    judge_cost_usd: float = Field(default=0.0, ge=0.0)
    created_at: datetime = Field(default_factory=utc_now)
