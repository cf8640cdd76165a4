"""The gRPC API against a real grpc.aio server on loopback, through the generated stub."""

from __future__ import annotations

import math
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from router_model.settings import ServiceSettings

LIMITS = ServiceSettings()


def error_reason(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


def test_route_prompt_and_messages(stub: router_pb2_grpc.RouterStub, prompts: list[str]) -> None:
    by_prompt = stub.Route(pb.RouteRequest(prompt=prompts[1]), timeout=10)
    assert by_prompt.tier in by_prompt.probabilities
    assert math.isclose(sum(by_prompt.probabilities.values()), 1.0, abs_tol=1e-5)
    assert len(by_prompt.decision_id) == 32
    assert list(by_prompt.policy.allowed_tiers) == [t.name for t in stub.ListTiers(
        pb.ListTiersRequest()).tiers]
    chat = pb.RouteRequest(messages=[pb.ChatMessage(
        role="user", content=[pb.ContentPart(type="text", text=prompts[1])])])
    by_chat = stub.Route(chat, timeout=10)
    assert dict(by_chat.probabilities) == dict(by_prompt.probabilities)
    assert by_chat.decision_id != by_prompt.decision_id


def test_route_policy_and_batch(stub: router_pb2_grpc.RouterStub, prompts: list[str]) -> None:
    tiers = [t.name for t in stub.ListTiers(pb.ListTiersRequest()).tiers]
    top = stub.Route(pb.RouteRequest(prompt=prompts[0], policy=pb.Policy(quality=1.0)))
    assert top.tier == tiers[-1] and top.policy.quality == 1.0
    cheap = stub.Route(pb.RouteRequest(prompt=prompts[0], policy=pb.Policy(quality=0.0)))
    assert cheap.tier == tiers[0]
    pinned = stub.Route(pb.RouteRequest(prompt=prompts[0], policy=pb.Policy(min_tier=tiers[-1])))
    assert pinned.tier == tiers[-1] and pinned.policy.min_tier == tiers[-1]
    requests = [pb.RouteRequest(prompt=p) for p in prompts]
    batch = stub.RouteBatch(pb.RouteBatchRequest(requests=requests), timeout=10).responses
    singles = [stub.Route(r) for r in requests]
    assert [b.tier for b in batch] == [s.tier for s in singles]


def test_get_model(stub: router_pb2_grpc.RouterStub) -> None:
    info = stub.GetModel(pb.GetModelRequest())
    assert info.model_version.startswith(info.name + ":")
    assert 0 <= info.default_quality <= 1 and len(info.tiers) >= 2


BAD = [
    ("empty prompt", pb.RouteRequest(prompt=""), "invalid_prompt"),
    ("neither prompt nor messages", pb.RouteRequest(), "invalid_prompt"),
    ("both", pb.RouteRequest(prompt="hi", messages=[pb.ChatMessage(
        role="user", content=[pb.ContentPart(type="text", text="hi")])]), "invalid_prompt"),
    ("no user text", pb.RouteRequest(messages=[pb.ChatMessage(
        role="user", content=[pb.ContentPart(type="image_url")])]), "invalid_prompt"),
    ("unknown tier", pb.RouteRequest(prompt="hi", policy=pb.Policy(max_tier="platinum")),
     "invalid_prompt"),
    ("unknown allowed tier", pb.RouteRequest(
        prompt="hi", policy=pb.Policy(allowed_tiers=["gpt-9"])), "invalid_prompt"),
    ("knob above 1", pb.RouteRequest(prompt="hi", policy=pb.Policy(quality=1.5)),
     "invalid_prompt"),
    ("knob below 0", pb.RouteRequest(prompt="hi", policy=pb.Policy(quality=-0.5)),
     "invalid_prompt"),
    ("knob NaN", pb.RouteRequest(prompt="hi", policy=pb.Policy(quality=math.nan)),
     "invalid_prompt"),
    ("prompt over max chars", pb.RouteRequest(prompt="word " * (LIMITS.max_prompt_chars // 5 + 1)),
     "prompt_too_large"),
]


@pytest.mark.parametrize(("request_", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_argument_then_still_serving(
    stub: router_pb2_grpc.RouterStub, request_: pb.RouteRequest, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Route(request_, timeout=10)
    err: Any = info.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details()
    assert error_reason(err) == reason
    assert stub.Route(pb.RouteRequest(prompt="What is 2 + 2?"), timeout=10).tier


def test_bad_batches(stub: router_pb2_grpc.RouterStub) -> None:
    too_many = pb.RouteBatchRequest(requests=[pb.RouteRequest(prompt="hi")] * (
        LIMITS.max_batch_items + 1))
    with pytest.raises(grpc.RpcError) as info:
        stub.RouteBatch(too_many, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    one_bad = pb.RouteBatchRequest(requests=[pb.RouteRequest(prompt="hi"), pb.RouteRequest()])
    with pytest.raises(grpc.RpcError) as info:
        stub.RouteBatch(one_bad, timeout=10)
    assert info.value.details().startswith("requests[1]")


def test_health_serving(fast_service: Any) -> None:
    with grpc.insecure_channel(fast_service.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "tierwise.v1.Router"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(fast_service: Any) -> None:
    with grpc.insecure_channel(fast_service.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
        names = {s.name for s in reply.list_services_response.service}
        assert {"tierwise.v1.Router", "grpc.health.v1.Health"} <= names
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="tierwise.v1.Router"
        )
        reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
        assert reply.file_descriptor_response.file_descriptor_proto


def test_health_not_serving_after_drain(run_service: Any, fast_bundle: Any) -> None:
    st = run_service(fast_bundle)
    with grpc.insecure_channel(st.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="tierwise.v1.Router")
        assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        st.call(st.service.drain())
        assert health.Check(request, timeout=5).status == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
    ready = httpx.get(f"{st.http_url}/readyz")
    assert ready.status_code == 503 and ready.json()["code"] == "model_not_ready"
