"""``ComplexityRouter``: a loaded bundle turning prompts into tier probabilities and decisions."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from router_model.artifact import Manifest, read_bundle
from router_model.encoder import SentenceEncoder, load_tokenizer
from router_model.errors import ArtifactMismatch, InvalidPrompt
from router_model.features import FEATURE_VERSION, Featurizer, featurize
from router_model.policy import Policy, ResolvedPolicy, allowed_mask, choose_tiers, resolve_policy
from router_model.tiers import Tier


@dataclass(frozen=True)
class RouteDecision:
    """One routing decision, as every transport reports it."""

    tier: str
    model: str
    probabilities: dict[str, float]
    policy: ResolvedPolicy
    model_version: str
    feature_version: int
    input_tokens: int
    expected_cost_usd: float
    top_tier_cost_usd: float


class ComplexityRouter:
    """Scores prompts with a bundle's ONNX classifier and applies the decision policy."""

    def __init__(self, session: ort.InferenceSession, manifest: Manifest, featurizer: Featurizer):
        self.session = session
        self.manifest = manifest
        self.featurizer = featurizer

    @classmethod
    def from_artifact(
        cls, path: Path, *, encoder: SentenceEncoder | None = None, tokenizer: Any = None
    ) -> ComplexityRouter:
        """Load and verify a bundle directory; reuse an already-open encoder when given.

        Raises:
            ArtifactMismatch: when the bundle is missing, corrupt or built for other feature code.
        """
        manifest, onnx_bytes = read_bundle(path)
        try:
            session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactMismatch(f"{path}: model.onnx does not load: {exc}") from exc
        shape = session.get_inputs()[0].shape
        if shape[-1] != len(manifest.feature_names):
            raise ArtifactMismatch(f"{path}: model.onnx takes {shape[-1]} features")
        if manifest.feature_set == "full" and encoder is None:
            encoder = SentenceEncoder.load(tokenizer=tokenizer)
        if tokenizer is None:
            tokenizer = encoder.tokenizer if encoder is not None else load_tokenizer()
        featurizer = Featurizer(manifest.feature_set, tokenizer, encoder)
        return cls(session, manifest, featurizer)

    @property
    def tiers(self) -> tuple[Tier, ...]:
        return self.manifest.tier_ladder()

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    def proba_from_features(self, matrix: NDArray[np.float32]) -> NDArray[np.float64]:
        """Run the ONNX classifier on a feature matrix: ``(n, n_tiers)`` probabilities."""
        out = self.session.run(["probabilities"], {"features": matrix.astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float64)

    def predict_proba(self, prompts: Sequence[str]) -> NDArray[np.float64]:
        """Probability that each tier is the cheapest adequate one, tiers ordered by price."""
        return self.proba_from_features(featurize(prompts, self.featurizer).matrix)

    def route(self, prompt: str, *, policy: Policy | None = None) -> RouteDecision:
        """Decide the tier for one prompt (the single place probabilities become a tier).

        Raises:
            InvalidPrompt: when the prompt is empty or the policy is invalid.
        """
        return self.route_batch([prompt], [policy])[0]

    def route_batch(
        self, prompts: Sequence[str], policies: Sequence[Policy | None]
    ) -> list[RouteDecision]:
        """Decide tiers for several prompts in one encoder batch.

        Raises:
            InvalidPrompt: when a prompt is empty or a policy is invalid.
        """
        tiers = self.tiers
        resolved = [resolve_policy(p, tiers, self.manifest.threshold) for p in policies]
        for prompt in prompts:
            if not prompt or not prompt.strip():
                raise InvalidPrompt("prompt must be a non-empty string")
        feats = featurize(prompts, self.featurizer)
        proba = self.proba_from_features(feats.matrix)
        return [
            self._decide(proba[i], int(feats.n_tokens[i]), resolved[i], tiers)
            for i in range(len(prompts))
        ]

    def _decide(
        self,
        proba: NDArray[np.float64],
        n_tokens: int,
        policy: ResolvedPolicy,
        tiers: Sequence[Tier],
    ) -> RouteDecision:
        k = int(choose_tiers(proba[None, :], policy.quality, allowed_mask(policy, tiers))[0])
        return RouteDecision(
            tier=tiers[k].name,
            model=tiers[k].model,
            probabilities={t.name: float(p) for t, p in zip(tiers, proba, strict=True)},
            policy=policy,
            model_version=self.model_version,
            feature_version=FEATURE_VERSION,
            input_tokens=n_tokens,
            expected_cost_usd=tiers[k].cost(n_tokens),
            top_tier_cost_usd=tiers[-1].cost(n_tokens),
        )


def prompt_digest(prompt: str) -> str:
    """First 12 hex digits of the prompt's sha256: what logs may show instead of the text."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:12]
