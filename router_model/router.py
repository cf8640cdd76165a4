"""``ComplexityRouter``: a loaded bundle turning prompts into tier probabilities and decisions."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from router_model.artifact import Manifest, read_bundle
from router_model.encoder import SentenceEncoder, load_tokenizer
from router_model.errors import ArtifactMismatch, InvalidPrompt
from router_model.features import FEATURE_VERSION, Featurizer, featurize, hand_row
from router_model.policy import Policy, ResolvedPolicy, choose_tier, resolve_policy
from router_model.tiers import Tier


# slots: built once per request, and a slotted frozen dataclass sets its fields ~2x faster
@dataclass(frozen=True, slots=True)
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
            session = classifier_session(onnx_bytes)
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

    # derived from the frozen manifest once, on first use (validating the ladder is ~10 us)
    @functools.cached_property
    def tiers(self) -> tuple[Tier, ...]:
        """The validated tier ladder, cheapest first.

        Raises:
            InvalidData: when the manifest's ladder is malformed.
        """
        return self.manifest.tier_ladder()

    @functools.cached_property
    def model_version(self) -> str:
        return self.manifest.model_version

    @functools.cached_property
    def _default_policy(self) -> ResolvedPolicy:
        return resolve_policy(None, self.tiers, self.manifest.threshold)

    @functools.cached_property
    def _default_allowed(self) -> list[bool]:
        return _allowed(self._default_policy, self.tiers)

    @functools.cached_property
    def _tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    @functools.cached_property
    def _run(self) -> Callable[[list[str], dict[str, Any], Any], list[Any]]:
        # InferenceSession.run re-checks the feed names and wraps provider errors on every call,
        # ~4 us: a twentieth of a hand-feature decision. The feed here is always the one float32
        # input checked at load, so the C++ session's run (onnxruntime is pinned) is called
        # directly when this onnxruntime has it.
        inner = getattr(self.session, "_sess", None)
        run: Callable[[list[str], dict[str, Any], Any], list[Any]] = (
            inner.run if inner is not None else self.session.run
        )
        return run

    @functools.cached_property
    def _bound(self) -> _BoundRow | None:
        if self.featurizer.feature_set != "hand":
            return None  # the encoder's milliseconds dwarf what binding saves
        cls = type(self)
        if (
            cls.proba_from_features is not ComplexityRouter.proba_from_features
            or cls.route_batch is not ComplexityRouter.route_batch
        ):
            return None  # a subclass that sees the rows or batches scored keeps seeing every one
        return _BoundRow.bind(self.session, len(self.manifest.feature_names), len(self.tiers))

    def resolve(self, policy: Policy | None) -> ResolvedPolicy:
        """``policy`` with this bundle's defaults applied and its tier names checked.

        Raises:
            InvalidPrompt: when the knob is outside [0, 1], a tier name is unknown, or no tier is
                left.
        """
        if policy is None:
            return self._default_policy
        return resolve_policy(policy, self.tiers, self.manifest.threshold)

    def proba_from_features(self, matrix: NDArray[np.float32]) -> NDArray[np.float64]:
        """Run the ONNX classifier on a feature matrix: ``(n, n_tiers)`` probabilities."""
        features = np.ascontiguousarray(matrix, dtype=np.float32)  # no copy when it already is
        out = self._run(_OUTPUTS, {"features": features}, None)[0]
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
        if len(policies) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(policies)} policies")
        resolved = [self.resolve(p) for p in policies]
        for prompt in prompts:
            check_prompt(prompt)
        bound = self._bound
        if bound is not None and len(prompts) == 1:
            return [self._route_one(prompts[0], resolved[0], bound)]
        feats = featurize(prompts, self.featurizer)
        # one row at a time in plain Python: numpy's per-call overhead outweighs a row's work
        rows: list[list[float]] = self.proba_from_features(feats.matrix).tolist()
        counts: list[int] = feats.n_tokens.tolist()
        return list(map(self._decide, rows, counts, resolved))

    def _route_one(self, prompt: str, policy: ResolvedPolicy, bound: _BoundRow) -> RouteDecision:
        """One hand-feature prompt, without numpy: its row is 33 floats."""
        row, n_tokens = hand_row(prompt, self.featurizer)
        proba = bound.run(row)
        if proba is None:  # another thread holds the binding
            proba = self.proba_from_features(np.array([row], dtype=np.float32))[0].tolist()
        return self._decide(proba, n_tokens, policy)

    def _decide(self, proba: list[float], n_tokens: int, policy: ResolvedPolicy) -> RouteDecision:
        tiers = self.tiers
        default = policy is self._default_policy
        allowed = self._default_allowed if default else _allowed(policy, tiers)
        chosen = tiers[choose_tier(proba, policy.quality, allowed)]
        return RouteDecision(
            tier=chosen.name,
            model=chosen.model,
            probabilities=dict(zip(self._tier_names, proba, strict=True)),
            policy=policy,
            model_version=self.model_version,
            feature_version=FEATURE_VERSION,
            input_tokens=n_tokens,
            expected_cost_usd=chosen.cost(n_tokens),
            top_tier_cost_usd=tiers[-1].cost(n_tokens),
        )


_OUTPUTS = ["probabilities"]


class _BoundRow:
    """The classifier on one row, run through an IOBinding of preallocated float32 buffers.

    ``session.run`` converts its feed dict into new tensors and its outputs into new arrays on
    every call, about half of a hand-feature row's ~11 us; here the row is written into a bound
    buffer and the probabilities read from another, with the same floats as ``run`` returns. One
    thread at a time: a caller that finds it busy gets ``None`` and uses ``run``.
    """

    def __init__(self, session: ort.InferenceSession, features: NDArray[np.float32],
                 proba: NDArray[np.float32]) -> None:
        self._session = session
        self._features = features
        self._proba = proba
        self._lock = threading.Lock()
        self._binding = session.io_binding()
        self._binding.bind_input(
            "features", "cpu", 0, np.float32, list(features.shape), features.ctypes.data
        )
        self._binding.bind_output(
            _OUTPUTS[0], "cpu", 0, np.float32, list(proba.shape), proba.ctypes.data
        )
        # the wrapper's run_with_iobinding checks for WebGPU graph capture on every call (~1 us):
        # the C++ session's is called directly when this onnxruntime has it, as ``_run`` does
        inner, bound = getattr(session, "_sess", None), getattr(self._binding, "_iobinding", None)
        self._run: Callable[[], None] = (
            functools.partial(inner.run_with_iobinding, bound, None)
            if inner is not None and bound is not None
            else functools.partial(session.run_with_iobinding, self._binding)
        )

    @classmethod
    def bind(
        cls, session: ort.InferenceSession, n_features: int, n_tiers: int
    ) -> _BoundRow | None:
        """A binding for ``session``, or ``None`` when its outputs are not float32 probabilities."""
        types = {o.name: o.type for o in session.get_outputs()}
        if types.get(_OUTPUTS[0]) != "tensor(float)" or session.get_inputs()[0].name != "features":
            return None
        features = np.zeros((1, n_features), dtype=np.float32)
        return cls(session, features, np.zeros((1, n_tiers), dtype=np.float32))

    def run(self, row: list[float]) -> list[float] | None:
        """The probabilities of one feature row, or ``None`` while another thread runs."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._features[0] = row  # float64 to float32 as np.array(..., dtype=float32) casts
            self._run()
            proba: list[float] = self._proba[0].tolist()
            return proba
        finally:
            self._lock.release()


def classifier_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """An onnxruntime session for a bundle's classifier: one thread, no spinning.

    The classifier is microseconds of work per row; a thread pool would only add wake-ups, and
    its threads' busy-waiting would take the cores that the event loop and the encoder need.

    Raises:
        Exception: onnxruntime's own (untyped) errors when the model does not load.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def check_prompt(prompt: str) -> None:
    """Refuse an empty or blank prompt.

    Raises:
        InvalidPrompt: when ``prompt`` is empty or only white space.
    """
    if not prompt or prompt.isspace():  # what ``not prompt.strip()`` says, without a copy
        raise InvalidPrompt("prompt must be a non-empty string")


def _allowed(policy: ResolvedPolicy, tiers: Sequence[Tier]) -> list[bool]:
    return [t.name in policy.allowed_tiers for t in tiers]


def prompt_digest(prompt: str) -> str:
    """First 12 hex digits of the prompt's sha256: what logs may show instead of the text."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:12]
