"""Where the gateway's decisions come from: a bundle in process, or the router service over gRPC.

Both sources check at start that the router's tier ladder has the configured tiers' models in
the configured order, and both report an unreachable, overloaded or unready router as
``RouterUnavailable``, on which the gateway fails open to its ``default_tier``. Tier names may
differ between the router and the config: they are matched by model name and translated here.

Both also give the feature vector the router scored, for the traffic record. In process it is
exactly the router's (``RecordingRouter`` keeps the rows it scored); over gRPC the gateway
computes it with the same feature code and the router's feature set, after checking the feature
versions agree.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from router_model.chat import ChatMessage
from router_model.encoder import EncoderConfig, SentenceEncoder, load_tokenizer
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
from router_model.router import ComplexityRouter, RouteDecision
from router_model.settings import ServiceSettings
from router_model.tiers import Tier
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

    def encoder(self) -> SentenceEncoder | None:
        """The router's sentence encoder, for the semantic cache (None: none in this process)."""
        return None

    def default_quality(self) -> float | None:
        """The router's default knob (its bundle's ``threshold``), None while unknown."""
        return None


def text_key(text: str) -> bytes:
    """A short key of a scored text (the texts themselves may be long; they are not kept)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RecordingRouter(ComplexityRouter):
    """A router that remembers the feature rows it just scored, keyed by the scored text.

    The traffic record must hold exactly the features the router used; keeping the rows of
    ``route_batch`` (through ``proba_from_features``, which it calls once with the batch's matrix,
    rows in prompt order) costs nothing, where computing them again would cost the hand features
    and, without a cache, a second encoder pass.
    """

    capacity: ClassVar[int] = 4096

    def __init__(self, session: Any, manifest: Any, featurizer: Featurizer) -> None:
        super().__init__(session, manifest, featurizer)
        self._rows: OrderedDict[bytes, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()

    def proba_from_features(self, matrix: NDArray[np.float32]) -> NDArray[np.float64]:
        self._local.matrix = matrix
        return super().proba_from_features(matrix)

    def route_batch(
        self, prompts: Sequence[str], policies: Sequence[Policy | None]
    ) -> list[RouteDecision]:
        self._local.matrix = None
        decisions = super().route_batch(prompts, policies)
        matrix = self._local.matrix
        if matrix is not None and len(matrix) == len(prompts):
            with self._lock:
                for prompt, row in zip(prompts, matrix, strict=True):
                    self._rows[text_key(prompt)] = np.array(row, dtype=np.float32)
                while len(self._rows) > self.capacity:
                    self._rows.popitem(last=False)
        return decisions

    def scored_features(self, text: str) -> NDArray[np.float32] | None:
        """The row scored for ``text`` (taken: each is handed out once), None if not kept."""
        with self._lock:
            return self._rows.pop(text_key(text), None)


def load_recording_router(path: Path, encoder_threads: int) -> RecordingRouter:
    """Load a bundle as a ``RecordingRouter``.

    Raises:
        ArtifactMismatch: when the bundle cannot be served.
    """
    manifest, _ = read_bundle(path)
    encoder = None
    if manifest.feature_set == "full":
        encoder = SentenceEncoder.load(config=EncoderConfig(intra_op_threads=encoder_threads))
    router = RecordingRouter.from_artifact(path, encoder=encoder)
    assert isinstance(router, RecordingRouter)
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
        self._router: RecordingRouter | None = None
        self._service: RouteService | None = None
        self._names: TierNames | None = None

    async def start(self, tiers: Sequence[Tier]) -> None:
        router = await asyncio.to_thread(load_recording_router, self._bundle, self._encoder_threads)
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

    def encoder(self) -> SentenceEncoder | None:
        return self._router.featurizer.encoder if self._router is not None else None

    def default_quality(self) -> float | None:
        return self._router.manifest.threshold if self._router is not None else None

    async def features(self, text: str) -> list[float]:
        if self._router is None:
            return []
        row = self._router.scored_features(text)
        if row is None:  # evicted under heavy load: compute it again (same code, same values)
            row = (await asyncio.to_thread(featurize, [text], self._router.featurizer)).matrix[0]
        return [float(x) for x in row]

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

