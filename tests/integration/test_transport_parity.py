"""In-process, HTTP and gRPC return the same decision for the same input (full-feature bundle)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from service.router.transport import convert, schemas

#: Fields that are the decision; ``decision_id`` and ``latency_ms`` differ by design.
VARYING = {"decision_id", "latency_ms"}


@pytest.fixture(scope="module")
def full_service(run_service: Any, full_bundle: Path) -> Any:
    return run_service(full_bundle)


@pytest.fixture(scope="module")
def cases(prompts: list[str]) -> list[schemas.RouteRequest]:
    # each case costs three encoder calls (~25-100 ms on CI's shared cores): a few suffice
    policies: list[dict[str, Any] | None] = [None, {"quality": 0.9}]
    out = [
        schemas.RouteRequest.model_validate({"prompt": p, "policy": pol})
        for p in prompts[:3] for pol in policies
    ]
    out.append(schemas.RouteRequest.model_validate({"messages": [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": prompts[0]},
        {"role": "assistant", "content": "D"},
        {"role": "user", "content": [{"type": "text", "text": prompts[1]}]},
    ]}))
    return out


@pytest.fixture()
def clients(full_service: Any) -> Iterator[tuple[httpx.Client, router_pb2_grpc.RouterStub]]:
    with httpx.Client(base_url=full_service.http_url, timeout=30) as http, \
            grpc.insecure_channel(full_service.grpc_target) as channel:
        yield http, router_pb2_grpc.RouterStub(channel)


def decision(response: schemas.RouteResponse) -> dict[str, Any]:
    return response.model_dump(exclude=VARYING)


def test_same_decision_on_every_transport(
    full_service: Any, cases: list[schemas.RouteRequest], clients: Any
) -> None:
    http, stub = clients
    service = full_service.service
    assert service.manifest.feature_set == "full"
    for case in cases:
        local = convert.route_response_model(
            full_service.call(service.route(convert.route_input_from_model(case), transport="test"))
        )
        over_http = schemas.RouteResponse.model_validate(
            http.post("/v1/route", json=case.model_dump(exclude_none=True)).json()
        )
        over_grpc = convert.route_response_model_from_pb(
            stub.Route(convert.route_request_pb_from_model(case), timeout=30)
        )
        assert decision(over_http) == decision(local) == decision(over_grpc)


def test_same_batch_on_every_transport(
    full_service: Any, cases: list[schemas.RouteRequest], clients: Any
) -> None:
    http, stub = clients
    service = full_service.service
    inputs = [convert.route_input_from_model(c) for c in cases]
    local = [convert.route_response_model(r)
             for r in full_service.call(service.route_batch(inputs, transport="test"))]
    body = schemas.RouteBatchRequest(requests=cases).model_dump(exclude_none=True)
    over_http = schemas.RouteBatchResponse.model_validate(
        http.post("/v1/route/batch", json=body).json()
    ).responses
    request = pb.RouteBatchRequest(
        requests=[convert.route_request_pb_from_model(c) for c in cases]
    )
    over_grpc = [convert.route_response_model_from_pb(r)
                 for r in stub.RouteBatch(request, timeout=30).responses]
    # one batch of the same prompts pads them the same way, so even the floats agree exactly
    assert [decision(r) for r in over_http] == [decision(r) for r in local]
    assert [decision(r) for r in over_grpc] == [decision(r) for r in local]
