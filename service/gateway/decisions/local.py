"""Decisions from the router core in this process (the gateway's ``router: bundle:`` mode).

The only place the gateway touches ``service.router``: it loads the bundle with the router's own
loader and asks a ``RouteService``, so limits, batching and the decision log are the router's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from router_model.chat import ChatMessage
from router_model.encoder import SentenceEncoder
from router_model.errors import ModelNotReady, Overloaded, PromptTooLarge
from router_model.features import Featurizer, featurize
from router_model.policy import Policy
from router_model.router import ComplexityRouter, RouteDecision
from router_model.settings import ServiceSettings
from router_model.tiers import Tier
from service.gateway.decisions.source import Decision, DecisionSource, RouterUnavailable, TierNames
from service.router.bundles import load_router
from service.router.core import RouteInput, RouteService
from service.shared.errors import DeadlineExceeded

logger = logging.getLogger(__name__)


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
    """Load a bundle as a ``RecordingRouter``, with the router service's own loader.

    Raises:
        ArtifactMismatch: when the bundle cannot be served.
    """
    router = load_router(path, encoder_threads=encoder_threads, kind=RecordingRouter)
    assert isinstance(router, RecordingRouter)
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
