"""What the gateway asks for decisions: ``DecisionSource``, its ``Decision`` and tier-name matching.

Both sources (``local``: the router core in process; ``remote``: the router service over gRPC)
check at start that the router's tier ladder has the configured tiers' models in the configured
order, and both report an unreachable, overloaded or unready router as ``RouterUnavailable``, on
which the gateway fails open to its ``default_tier``. Tier names may differ between the router and
the config: they are matched by model name and translated here.

Both also give the feature vector the router scored, for the traffic record. In process it is
exactly the router's (``RecordingRouter`` keeps the rows it scored); over gRPC the gateway
computes it with the same feature code and the router's feature set, after checking the feature
versions agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from router_model.chat import ChatMessage
from router_model.encoder import SentenceEncoder
from router_model.errors import ArtifactMismatch, RouterError
from router_model.policy import Policy
from router_model.tiers import Tier


class RouterUnavailable(RouterError):
    """The router could not decide in time (unreachable, overloaded, not ready): fail open."""

    code: ClassVar[str] = "router_unavailable"


@dataclass(frozen=True)
class Decision:
    """A router decision in the gateway's tier names."""

    decision_id: str
    tier: str
    probabilities: dict[str, float]
    quality: float
    min_tier: str
    max_tier: str
    model_version: str
    feature_version: int
    latency_ms: float


class TierNames:
    """Translation between the gateway's tier names and the router's, matched by model name."""

    def __init__(self, config_tiers: Sequence[Tier], router_tiers: Sequence[Tier], source: str):
        want = [t.model for t in config_tiers]
        have = [t.model for t in router_tiers]
        if want != have:
            raise ArtifactMismatch(
                f"{source} routes among models {have}, but the gateway config's tiers are "
                f"{want} (cheapest first); retrain the bundle or fix 'tiers:' so they match"
            )
        self.to_router = {c.name: r.name for c, r in zip(config_tiers, router_tiers, strict=True)}
        self.to_config = {r: c for c, r in self.to_router.items()}

    def policy(self, policy: Policy) -> Policy:
        """``policy`` with tier names translated to the router's."""
        def name(n: str | None) -> str | None:
            return self.to_router[n] if n is not None else None

        return Policy(
            quality=policy.quality, min_tier=name(policy.min_tier), max_tier=name(policy.max_tier),
            allowed_tiers=tuple(self.to_router[n] for n in policy.allowed_tiers),
        )

    def probabilities(self, probabilities: dict[str, float]) -> dict[str, float]:
        return {self.to_config[k]: float(v) for k, v in probabilities.items()}


class DecisionSource(ABC):
    """What the gateway asks for decisions and features."""

    @abstractmethod
    async def start(self, tiers: Sequence[Tier]) -> None:
        """Connect or load, and check the router's tiers against the configured ones.

        Raises:
            ArtifactMismatch: when the tiers differ or the bundle cannot be served.
        """

    @abstractmethod
    async def decide(self, messages: tuple[ChatMessage, ...], policy: Policy) -> Decision:
        """The router's decision for a chat.

        Raises:
            InvalidPrompt: when the chat or the policy cannot be scored.
            RouterUnavailable: when the router cannot decide now.
        """

    @abstractmethod
    async def features(self, text: str) -> list[float]:
        """The feature vector the router scored for ``text`` (empty when unknown)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the router (stop batching, close the channel)."""

    def encoder(self) -> SentenceEncoder | None:
        """The router's sentence encoder, for the semantic cache (None: none in this process)."""
        return None

    def default_quality(self) -> float | None:
        """The router's default knob (its bundle's ``threshold``), None while unknown."""
        return None
