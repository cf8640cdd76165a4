"""Where the gateway's decisions come from: a bundle in process, or the router service over gRPC.

Both sources check at start that the router's tier ladder has the configured tiers' models in
the configured order, and both report an unreachable, overloaded or unready router as
``RouterUnavailable``, on which the gateway fails open to its ``default_tier``. Tier names may
differ between the router and the config: they are matched by model name and translated here.

Both also give the feature vector the router scored, for the traffic record. In process it is
exactly the router's (the encoder remembers the embeddings it just computed, so the second pass
costs only the hand features); over gRPC the gateway computes it with the same feature code and
the router's feature set, after checking the feature versions agree.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from router_model.artifact import read_bundle
from router_model.encoder import EMBEDDING_DIM, EncoderConfig, SentenceEncoder, load_tokenizer
from router_model.errors import (
    ArtifactMismatch,
    InvalidData,
    ModelNotReady,
    Overloaded,
    PromptTooLarge,
    RouterError,
)
from router_model.features import FEATURE_VERSION, Featurizer, featurize
from router_model.policy import Policy
from router_model.router import ComplexityRouter
from router_model.settings import ServiceSettings
from router_model.tiers import Tier
from service.chat import ChatMessage
from service.core import RouteInput, RouteService
from service.errors import DeadlineExceeded

logger = logging.getLogger(__name__)


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


class MemoEncoder(SentenceEncoder):
    """A sentence encoder that remembers its most recent embeddings (keyed by word-piece ids).

    The gateway's traffic record needs the features the router just scored; this makes the second
    ``featurize`` of the same text reuse the router's embedding instead of encoding again.
    """

    capacity: ClassVar[int] = 2048

    def __init__(self, session: Any, tokenizer: Any, config: EncoderConfig) -> None:
        super().__init__(session, tokenizer, config)
        self._memo: OrderedDict[tuple[int, ...], NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def encode_ids(self, ids: Sequence[list[int]]) -> NDArray[np.float32]:
        keys = [tuple(x) for x in ids]
        out = np.zeros((len(keys), EMBEDDING_DIM), dtype=np.float32)
        with self._lock:
            found = [self._memo.get(k) for k in keys]
        todo = [i for i, v in enumerate(found) if v is None]
        if todo:
            fresh = super().encode_ids([ids[i] for i in todo])
            with self._lock:
                for j, i in enumerate(todo):
                    self._memo[keys[i]] = found[i] = fresh[j]
                    self._memo.move_to_end(keys[i])
                while len(self._memo) > self.capacity:
                    self._memo.popitem(last=False)
        for i, v in enumerate(found):
            out[i] = v
        return out


def _load_local_router(path: Path, encoder_threads: int) -> ComplexityRouter:
    manifest, _ = read_bundle(path)
    encoder = None
    if manifest.feature_set == "full":
        encoder = MemoEncoder.load(config=EncoderConfig(intra_op_threads=encoder_threads))
    router = ComplexityRouter.from_artifact(path, encoder=encoder)
    try:
        router.manifest.tier_ladder()
    except InvalidData as exc:
        raise ArtifactMismatch(f"{path}: {exc}") from exc
    return router


class LocalDecisions(DecisionSource):
    """Decisions from a ``RouteService`` in this process (the ``router: bundle:`` mode)."""

    def __init__(self, bundle: Path, settings: ServiceSettings, encoder_threads: int = 0) -> None:
        self._bundle = bundle
        self._settings = settings
        self._encoder_threads = encoder_threads
        self._router: ComplexityRouter | None = None
        self._service: RouteService | None = None
        self._names: TierNames | None = None

    async def start(self, tiers: Sequence[Tier]) -> None:
        router = await asyncio.to_thread(_load_local_router, self._bundle, self._encoder_threads)
        self._names = TierNames(tiers, router.tiers, f"bundle {self._bundle}")
        self._router = router
        self._service = RouteService(self._settings, router, encoder_threads=self._encoder_threads)
        logger.info("routing in process with %s from %s", router.model_version, self._bundle)

    async def decide(self, messages: tuple[ChatMessage, ...], policy: Policy) -> Decision:
        if self._service is None or self._names is None:
            raise RouterUnavailable("the router is not started")
        names = self._names
        try:
            result = await self._service.route(
                RouteInput(messages=messages, policy=names.policy(policy)), transport="gateway"
            )
        except (Overloaded, DeadlineExceeded, ModelNotReady, PromptTooLarge) as exc:
            # a prompt too long to score is still a fine request for the LLM: fail open
            raise RouterUnavailable(str(exc)) from exc
        d = result.decision
        return Decision(
            decision_id=result.decision_id, tier=names.to_config[d.tier],
            probabilities=names.probabilities(d.probabilities), quality=d.policy.quality,
            min_tier=names.to_config[d.policy.min_tier],
            max_tier=names.to_config[d.policy.max_tier], model_version=d.model_version,
            feature_version=d.feature_version, latency_ms=result.latency_ms,
        )

    async def features(self, text: str) -> list[float]:
        if self._router is None:
            return []
        featurizer = self._router.featurizer
        feats = await asyncio.to_thread(featurize, [text], featurizer)
        return [float(x) for x in feats.matrix[0]]

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.aclose()


def remote_featurizer(feature_set: str, feature_version: int, address: str) -> Featurizer | None:
    """A featurizer matching a remote router's (None when its feature version is not ours).

    Raises:
        ArtifactMismatch: when the encoder of the ``full`` feature set cannot be loaded.
    """
    if feature_version != FEATURE_VERSION or feature_set not in ("full", "hand"):
        logger.warning(
            "router at %s uses features v%d/%s, this gateway v%d: traffic records get no features",
            address, feature_version, feature_set, FEATURE_VERSION,
        )
        return None
    if feature_set == "hand":
        return Featurizer("hand", load_tokenizer())
    encoder = SentenceEncoder.load()
    return Featurizer("full", encoder.tokenizer, encoder)

