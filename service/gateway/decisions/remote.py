"""Decisions from the tierwise router service over gRPC (the gateway's ``router: address:`` mode).

Every call carries a deadline (``router.timeout_s``). A router that cannot be reached when the
gateway starts does not stop it: the gateway fails open until the router answers, and checks the
router's tiers (``ListTiers``) and feature set (``GetModel``) before it uses its first decision.
A router that answers with other tiers refuses the gateway's start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import grpc

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from router_model.chat import ChatMessage
from router_model.encoder import SentenceEncoder, load_tokenizer
from router_model.errors import ArtifactMismatch, InvalidPrompt
from router_model.features import FEATURE_VERSION, Featurizer, featurize
from router_model.policy import Policy
from router_model.tiers import Tier
from service.gateway.decisions.source import Decision, DecisionSource, RouterUnavailable, TierNames

logger = logging.getLogger(__name__)

#: Reconnect quickly once the router is back (gRPC's defaults back off up to two minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
#: After a failed check of a reachable router, wait this long before checking again.
RECHECK_S = 5.0


def policy_pb(policy: Policy) -> pb.Policy:
    """The protobuf form of a policy (unset fields stay unset)."""
    fields: dict[str, Any] = {"allowed_tiers": list(policy.allowed_tiers)}
    for name in ("quality", "min_tier", "max_tier"):
        value = getattr(policy, name)
        if value is not None:
            fields[name] = value
    return pb.Policy(**fields)


def messages_pb(messages: Sequence[ChatMessage]) -> list[pb.ChatMessage]:
    """The protobuf form of a chat."""
    return [
        pb.ChatMessage(
            role=m.role, content=[pb.ContentPart(type=p.type, text=p.text) for p in m.content]
        )
        for m in messages
    ]


class RemoteDecisions(DecisionSource):
    """Decisions from ``tierwise.v1.Router/Route`` with a deadline; fails open when unreachable."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._tiers: tuple[Tier, ...] = ()
        self._channel: grpc.aio.Channel | None = None
        self._stub: router_pb2_grpc.RouterStub | None = None
        self._names: TierNames | None = None
        self._featurizer: Featurizer | None = None
        self._lock = asyncio.Lock()
        self._last_check = float("-inf")
        #: The router's default knob as GetModel reported it when the tiers were checked.
        self._default_quality: float | None = None

    async def start(self, tiers: Sequence[Tier]) -> None:
        self._tiers = tuple(tiers)
        self._channel = grpc.aio.insecure_channel(self._address, options=CHANNEL_OPTIONS)
        self._stub = router_pb2_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            await self._check()
        except RouterUnavailable as exc:
            logger.warning(
                "router at %s unreachable at start (%s): failing open until it answers",
                self._address, exc,
            )

    async def _check(self) -> TierNames:
        """Compare the router's tiers with ours and load the matching featurizer (once)."""
        if self._names is not None:
            return self._names
        async with self._lock:
            if self._names is not None:
                return self._names
            self._last_check = time.monotonic()
            listed = await self._call("ListTiers", pb.ListTiersRequest())
            router_tiers = [Tier(t.name, t.model, t.input_price, t.output_price)
                            for t in listed.tiers]
            names = TierNames(self._tiers, router_tiers, f"router at {self._address}")
            info = await self._call("GetModel", pb.GetModelRequest())
            self._featurizer = await asyncio.to_thread(
                remote_featurizer, info.feature_set, info.feature_version, self._address
            )
            self._names = names
            self._default_quality = float(info.default_quality)
            logger.info("routing with %s at %s", info.model_version, self._address)
            return names

    async def _call(self, method: str, request: Any) -> Any:
        if self._stub is None:
            raise RouterUnavailable("the router client is not started")
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidPrompt(exc.details() or "invalid request") from exc
            raise RouterUnavailable(f"{method}: {code.name}") from exc

    async def decide(self, messages: tuple[ChatMessage, ...], policy: Policy) -> Decision:
        if self._names is None and time.monotonic() - self._last_check < RECHECK_S:
            raise RouterUnavailable("router tiers not checked yet")
        try:
            names = await self._check()
        except ArtifactMismatch as exc:
            logger.error("not using the router: %s", exc)
            raise RouterUnavailable("the router's tiers do not match") from exc
        start = time.perf_counter()
        request = pb.RouteRequest(messages=messages_pb(messages), policy=policy_pb(
            names.policy(policy)))
        response = await self._call("Route", request)
        return Decision(
            decision_id=response.decision_id, tier=names.to_config[response.tier],
            probabilities=names.probabilities(dict(response.probabilities)),
            quality=response.policy.quality,
            min_tier=names.to_config[response.policy.min_tier],
            max_tier=names.to_config[response.policy.max_tier],
            model_version=response.model_version, feature_version=response.feature_version,
            latency_ms=(time.perf_counter() - start) * 1000.0,
        )

    async def features(self, text: str) -> list[float]:
        featurizer = self._featurizer
        if featurizer is None:
            return []
        feats = await asyncio.to_thread(featurize, [text], featurizer)
        return [float(x) for x in feats.matrix[0]]

    def default_quality(self) -> float | None:
        return self._default_quality

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()


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
