"""Every conversion between protobuf messages, pydantic schemas and domain values.

Requests converge on ``core.RouteInput``; results leave through one field dictionary per response
kind, built once and handed to the pydantic model or to the protobuf constructor, so HTTP and gRPC
cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from protos.tierwise.v1 import router_pb2 as pb
from router_model.artifact import Manifest
from router_model.chat import ChatMessage, ContentPart
from router_model.policy import Policy, policy_fields
from router_model.tiers import Tier
from service.router.core import RouteInput, RouteResult
from service.router.transport import schemas

# -- requests: pydantic -> domain ---------------------------------------------------------------


def policy_from_model(policy: schemas.Policy | None) -> Policy | None:
    """The domain policy of an HTTP request (``None`` when the request has none)."""
    if policy is None:
        return None
    return Policy(
        quality=policy.quality,
        min_tier=policy.min_tier,
        max_tier=policy.max_tier,
        allowed_tiers=tuple(policy.allowed_tiers),
    )


def message_from_model(message: schemas.ChatMessage) -> ChatMessage:
    """A chat turn; string content becomes one text part (OpenAI's shorthand), null none."""
    if isinstance(message.content, str):
        return ChatMessage(message.role, (ContentPart("text", message.content),))
    if message.content is None:
        return ChatMessage(message.role, ())
    return ChatMessage(message.role, tuple(ContentPart(p.type, p.text) for p in message.content))


def route_input_from_model(request: schemas.RouteRequest) -> RouteInput:
    """The core's view of an HTTP route request."""
    return RouteInput(
        prompt=request.prompt,
        messages=tuple(message_from_model(m) for m in request.messages),
        policy=policy_from_model(request.policy),
    )


# -- requests: protobuf -> domain ---------------------------------------------------------------


def policy_from_pb(request: pb.RouteRequest) -> Policy | None:
    """The domain policy of a gRPC request (``None`` when the field is unset)."""
    if not request.HasField("policy"):
        return None
    p = request.policy
    return Policy(
        quality=p.quality if p.HasField("quality") else None,
        min_tier=p.min_tier if p.HasField("min_tier") else None,
        max_tier=p.max_tier if p.HasField("max_tier") else None,
        allowed_tiers=tuple(p.allowed_tiers),
    )


def route_input_from_pb(request: pb.RouteRequest) -> RouteInput:
    """The core's view of a gRPC route request."""
    return RouteInput(
        prompt=request.prompt if request.HasField("prompt") else None,
        messages=tuple(
            ChatMessage(m.role, tuple(ContentPart(p.type, p.text) for p in m.content))
            for m in request.messages
        ),
        policy=policy_from_pb(request),
    )


# -- responses: domain -> fields -> pydantic / protobuf -----------------------------------------


def route_response_fields(result: RouteResult) -> dict[str, Any]:
    """The fields of ``RouteResponse`` for one result."""
    d = result.decision
    return {
        "decision_id": result.decision_id,
        "tier": d.tier,
        "model": d.model,
        "probabilities": dict(d.probabilities),
        "expected_cost_usd": d.expected_cost_usd,
        "top_tier_cost_usd": d.top_tier_cost_usd,
        "policy": policy_fields(d.policy),
        "model_version": d.model_version,
        "feature_version": d.feature_version,
        "input_tokens": d.input_tokens,
        "latency_ms": result.latency_ms,
    }


def tier_fields(tier: Tier) -> dict[str, Any]:
    """The fields of ``TierInfo``."""
    return {
        "name": tier.name,
        "model": tier.model,
        "input_price": tier.input_price,
        "output_price": tier.output_price,
    }


def model_info_fields(manifest: Manifest, tiers: tuple[Tier, ...]) -> dict[str, Any]:
    """The fields of ``ModelInfo`` for a served bundle."""
    return {
        "name": manifest.name,
        "model_version": manifest.model_version,
        "feature_version": manifest.feature_version,
        "feature_set": manifest.feature_set,
        "default_quality": manifest.threshold,
        "tiers": [tier_fields(t) for t in tiers],
        "created_at": manifest.created_at,
        "git_sha": manifest.git_sha,
    }


def route_response_model(result: RouteResult) -> schemas.RouteResponse:
    """HTTP body of one decision."""
    return schemas.RouteResponse.model_validate(route_response_fields(result))


def route_response_pb(result: RouteResult) -> pb.RouteResponse:
    """gRPC message of one decision."""
    return pb.RouteResponse(**route_response_fields(result))


def batch_response_model(results: list[RouteResult]) -> schemas.RouteBatchResponse:
    """HTTP body of a batch of decisions."""
    return schemas.RouteBatchResponse(responses=[route_response_model(r) for r in results])


def batch_response_pb(results: list[RouteResult]) -> pb.RouteBatchResponse:
    """gRPC message of a batch of decisions."""
    return pb.RouteBatchResponse(responses=[route_response_pb(r) for r in results])


def tiers_model(tiers: tuple[Tier, ...]) -> schemas.ListTiersResponse:
    """HTTP body of the tier ladder."""
    return schemas.ListTiersResponse.model_validate({"tiers": [tier_fields(t) for t in tiers]})


def tiers_pb(tiers: tuple[Tier, ...]) -> pb.ListTiersResponse:
    """gRPC message of the tier ladder."""
    return pb.ListTiersResponse(tiers=[tier_fields(t) for t in tiers])


def model_info_model(manifest: Manifest, tiers: tuple[Tier, ...]) -> schemas.ModelInfo:
    """HTTP body of the served bundle's identity."""
    return schemas.ModelInfo.model_validate(model_info_fields(manifest, tiers))


def model_info_pb(manifest: Manifest, tiers: tuple[Tier, ...]) -> pb.ModelInfo:
    """gRPC message of the served bundle's identity."""
    return pb.ModelInfo(**model_info_fields(manifest, tiers))


# -- pydantic <-> protobuf (clients, and tests that send one input over both transports) -------


def route_request_pb_from_model(request: schemas.RouteRequest) -> pb.RouteRequest:
    """The gRPC form of an HTTP route request (string content becomes one text part)."""
    doc = request.model_dump(exclude_none=True)
    doc["messages"] = [
        {"role": msg.role, "content": [{"type": p.type, "text": p.text} for p in msg.content]}
        for msg in map(message_from_model, request.messages)
    ]
    return pb.RouteRequest(**doc)


def route_response_model_from_pb(response: pb.RouteResponse) -> schemas.RouteResponse:
    """The HTTP form of a gRPC decision."""
    doc = MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return schemas.RouteResponse.model_validate(doc)
