"""The HTTP API against a real uvicorn server on loopback: every endpoint and every bad input
(admin reload: ``test_http_admin.py``)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from http_support import assert_problem, assert_still_serves

from protos.tierwise.v1 import router_pb2_grpc
from router_model.settings import ServiceSettings
from service.router.transport import convert, schemas

LIMITS = ServiceSettings()


def test_route_prompt(http: httpx.Client, prompts: list[str]) -> None:
    body = http.post("/v1/route", json={"prompt": prompts[1]}).json()
    assert body["tier"] in body["probabilities"]
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert len(body["decision_id"]) == 32 and int(body["decision_id"], 16) >= 0
    assert body["policy"]["allowed_tiers"] == list(body["probabilities"])
    assert 0 < body["expected_cost_usd"] <= body["top_tier_cost_usd"]
    assert body["input_tokens"] > 0 and body["latency_ms"] > 0
    model = http.get("/v1/model").json()
    assert body["model_version"] == model["model_version"]
    assert body["policy"]["quality"] == model["default_quality"]


def test_route_messages_scores_the_last_user_turn(http: httpx.Client, prompts: list[str]) -> None:
    prompt = prompts[2]
    chat = {"messages": [
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": [{"type": "text", "text": prompt},
                                     {"type": "image_url", "text": ""}]},
    ]}
    by_chat = http.post("/v1/route", json=chat).json()
    by_prompt = http.post("/v1/route", json={"prompt": prompt}).json()
    assert by_chat["probabilities"] == by_prompt["probabilities"]
    assert by_chat["input_tokens"] == by_prompt["input_tokens"]


def test_openai_chat_messages_are_accepted_as_sent(
    http: httpx.Client, stub: router_pb2_grpc.RouterStub, prompts: list[str]
) -> None:
    """Members the router does not use are ignored; text parts are scored, image parts not."""
    openai = [
        {"role": "system", "name": "setup", "content": "You are a careful assistant."},
        {"role": "user", "name": "ada", "content": [
            {"type": "text", "text": prompts[1], "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "primes"}'},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "2, 3, 5, 7"},
        {"role": "user", "content": [{"type": "text", "text": prompts[2]}]},
    ]
    plain = [{"role": m["role"], "content": t} for m, t in (
        (openai[0], openai[0]["content"]), (openai[1], prompts[1]), (openai[4], prompts[2]))]
    response = http.post("/v1/route", json={"messages": openai})
    assert response.status_code == 200, response.text
    expected = http.post("/v1/route", json={"messages": plain}).json()
    assert response.json()["probabilities"] == expected["probabilities"]
    assert response.json()["input_tokens"] == expected["input_tokens"]
    # gRPC: the same chat in the proto's shape (no tool fields; null content is no parts)
    request = convert.route_request_pb_from_model(
        schemas.RouteRequest.model_validate({"messages": openai}))
    assert [len(m.content) for m in request.messages] == [1, 2, 0, 1, 1]
    by_grpc = stub.Route(request, timeout=10)
    assert dict(by_grpc.probabilities) == expected["probabilities"]


def test_both_route_paths_give_the_same_decision(http: httpx.Client, prompts: list[str]) -> None:
    """Plain ``application/json`` takes the fast Starlette route, anything else FastAPI's."""
    raw = json.dumps({"prompt": prompts[1], "policy": {"quality": 0.7}}).encode()
    volatile = {"decision_id", "latency_ms"}
    bodies = []
    for content_type in ("application/json", "application/json; charset=utf-8"):
        response = http.post("/v1/route", content=raw, headers={"content-type": content_type})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        bodies.append({k: v for k, v in response.json().items() if k not in volatile})
    assert bodies[0] == bodies[1]
    bad = b'{"prompt": ""}'
    problems = [
        assert_problem(http.post("/v1/route", content=bad, headers={"content-type": t}), 422,
                       "invalid_prompt")
        for t in ("application/json", "application/json; charset=utf-8")
    ]
    assert problems[0]["detail"] == problems[1]["detail"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"quality": 0.0}, "cheapest"),
        ({"quality": 1.0}, "top"),
        ({"min_tier": "TOP"}, "top"),
        ({"max_tier": "CHEAPEST", "quality": 1.0}, "cheapest"),
        ({"allowed_tiers": ["CHEAPEST"], "quality": 1.0}, "cheapest"),
    ],
)
def test_policy(
    http: httpx.Client, prompts: list[str], policy: dict[str, Any], expected: str
) -> None:
    names = [t["name"] for t in http.get("/v1/tiers").json()["tiers"]]
    names_for = {"CHEAPEST": names[0], "TOP": names[-1]}
    policy = json.loads(json.dumps(policy), object_hook=lambda d: {
        k: names_for.get(v, v) if isinstance(v, str) else
        [names_for.get(x, x) for x in v] if isinstance(v, list) else v for k, v in d.items()
    })
    body = http.post("/v1/route", json={"prompt": prompts[3], "policy": policy}).json()
    assert body["tier"] == (names[0] if expected == "cheapest" else names[-1])


def test_batch_matches_single_requests(http: httpx.Client, prompts: list[str]) -> None:
    qualities = (0.2, 0.5, 0.8, 0.5, 0.9)
    requests = [
        {"prompt": p, "policy": {"quality": q}} for p, q in zip(prompts, qualities, strict=True)
    ]
    batch = http.post("/v1/route/batch", json={"requests": requests}).json()["responses"]
    singles = [http.post("/v1/route", json=r).json() for r in requests]
    assert [b["tier"] for b in batch] == [s["tier"] for s in singles]
    for b, s in zip(batch, singles, strict=True):
        assert b["probabilities"] == pytest.approx(s["probabilities"], abs=1e-6)
    assert len({b["decision_id"] for b in batch}) == len(batch)


def test_tiers_model_health_metrics_docs(http: httpx.Client, prompts: list[str]) -> None:
    tiers = http.get("/v1/tiers").json()["tiers"]
    assert len(tiers) >= 2 and {"name", "model", "input_price", "output_price"} <= tiers[0].keys()
    model = http.get("/v1/model").json()
    assert model["tiers"] == tiers and model["feature_set"] in {"hand", "full"}
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["model_version"] == model["model_version"]
    http.post("/v1/route", json={"prompt": prompts[0]})
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'tierwise_decisions_total{tier="' in metrics.text
    info = f'feature_version="1",model_version="{model["model_version"]}"'
    assert f"tierwise_model_info{{{info}}} 1.0" in metrics.text
    paths = http.get("/openapi.json").json()["paths"]
    documented = {"/v1/route", "/v1/route/batch", "/v1/tiers", "/v1/model", "/v1/admin/reload"}
    assert documented <= paths.keys()
    assert "application/problem+json" in paths["/v1/route"]["post"]["responses"]["422"]["content"]
    assert http.get("/docs").status_code == 200


JSON = {"content-type": "application/json"}
BAD_INPUTS = [
    ("malformed json", b'{"prompt": "unfinished', JSON, 400, "malformed_json"),
    ("invalid utf-8", b'{"prompt": "caf\xe9 \xff"}', JSON, 400, "invalid_utf8"),
    ("missing prompt", b"{}", JSON, 422, "invalid_prompt"),
    ("empty prompt", b'{"prompt": ""}', JSON, 422, "invalid_prompt"),
    ("blank prompt", b'{"prompt": "  \\n\\t "}', JSON, 422, "invalid_prompt"),
    ("prompt not a string", b'{"prompt": 42}', JSON, 422, "validation_error"),
    ("body not an object", b'["What is 2+2?"]', JSON, 422, "validation_error"),
    ("messages not a list", b'{"messages": "hi"}', JSON, 422, "validation_error"),
    ("no user message", b'{"messages": [{"role": "system", "content": "Be brief."}]}', JSON,
     422, "invalid_prompt"),
    ("message content a number", b'{"messages": [{"role": "user", "content": 5}]}', JSON,
     422, "validation_error"),
    ("content part not an object", b'{"messages": [{"role": "user", "content": ["hi"]}]}', JSON,
     422, "validation_error"),
    ("text part text a number",
     b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}', JSON,
     422, "validation_error"),
    ("message without role", b'{"messages": [{"content": "hi"}]}', JSON, 422, "validation_error"),
    ("user content null", b'{"messages": [{"role": "user", "content": null}]}', JSON,
     422, "invalid_prompt"),
    ("only images and tool calls",
     b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": '
     b'"https://example.com/a.png"}}]}, {"role": "assistant", "content": null, "tool_calls": '
     b'[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}',
     JSON, 422, "invalid_prompt"),
    ("both prompt and messages",
     b'{"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}', JSON,
     422, "invalid_prompt"),
    ("unknown field", b'{"prompt": "hi", "polcy": {"quality": 0.9}}', JSON,
     422, "validation_error"),
    ("knob above 1", b'{"prompt": "hi", "policy": {"quality": 1.5}}', JSON,
     422, "validation_error"),
    ("knob below 0", b'{"prompt": "hi", "policy": {"quality": -0.1}}', JSON,
     422, "validation_error"),
    ("knob NaN", b'{"prompt": "hi", "policy": {"quality": NaN}}', JSON, 422, "validation_error"),
    ("knob not a number", b'{"prompt": "hi", "policy": {"quality": "high"}}', JSON,
     422, "validation_error"),
    ("knob a numeric string", b'{"prompt": "hi", "policy": {"quality": "0.5"}}', JSON,
     422, "validation_error"),
    ("knob true", b'{"prompt": "hi", "policy": {"quality": true}}', JSON,
     422, "validation_error"),
    ("knob false", b'{"prompt": "hi", "policy": {"quality": false}}', JSON,
     422, "validation_error"),
    ("unknown min tier", b'{"prompt": "hi", "policy": {"min_tier": "platinum"}}', JSON,
     422, "invalid_prompt"),
    ("unknown allowed tier", b'{"prompt": "hi", "policy": {"allowed_tiers": ["gpt-9"]}}', JSON,
     422, "invalid_prompt"),
    ("no text content type", b'{"prompt": "hi"}', {"content-type": "text/plain"},
     422, "validation_error"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_a_problem_and_the_service_keeps_serving(
    http: httpx.Client, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    doc = assert_problem(http.post("/v1/route", content=body, headers=headers), status, code)
    assert doc["instance"] == "/v1/route"
    assert_still_serves(http)


#: Bodies Python's json module refuses with something other than JSONDecodeError (4 KB each).
UNPARSEABLE = {
    "nested too deeply": b'{"prompt": "a", "foo": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    "integer over the digit limit": b'{"prompt": "a", "policy": {"quality": 1' + b"0" * 5000
    + b"}}",
}


@pytest.mark.parametrize("path", ["/v1/route", "/v1/route/batch", "/v1/admin/reload"])
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
@pytest.mark.parametrize("body", UNPARSEABLE.values(), ids=UNPARSEABLE.keys())
def test_unparseable_json_is_a_counted_400_on_every_json_endpoint(
    http: httpx.Client, fast_service: Any, admin_key: str, path: str, content_type: str,
    body: bytes,
) -> None:
    def counted() -> float:
        value = fast_service.service.metrics.registry.get_sample_value(
            "tierwise_errors_total", {"transport": "http", "code": "malformed_json"})
        return value or 0.0

    before = counted()
    headers = {"content-type": content_type, "authorization": f"Bearer {admin_key}"}
    doc = assert_problem(http.post(path, content=body, headers=headers), 400, "malformed_json")
    assert doc["instance"] == path
    assert counted() == before + 1
    assert_still_serves(http)


def test_knob_is_any_json_number_and_nothing_else(http: httpx.Client) -> None:
    body = http.post("/v1/route", json={"prompt": "hi", "policy": {"quality": 1}}).json()
    assert body["policy"]["quality"] == 1.0
    for knob in ("0.5", True):
        batch = {"requests": [{"prompt": "hi"}, {"prompt": "hi", "policy": {"quality": knob}}]}
        doc = assert_problem(http.post("/v1/route/batch", json=batch), 422, "validation_error")
        assert "requests.1.policy.quality" in doc["detail"]


def test_lone_surrogate_escape_is_scored(http: httpx.Client) -> None:
    # valid JSON, not encodable as UTF-8: the tokenizer and the log digest must both cope
    body = b'{"prompt": "Is caf\\ud800 a word?"}'
    assert http.post("/v1/route", content=body, headers=JSON).status_code == 200


def test_oversize_bodies_get_413(http: httpx.Client) -> None:
    big = json.dumps({"prompt": "word " * (LIMITS.max_body_bytes // 5 + 10)}).encode()
    assert_problem(http.post("/v1/route", content=big, headers=JSON), 413, "prompt_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the actual size is what counts
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    assert_problem(http.post("/v1/route", content=chunks(), headers=JSON), 413, "prompt_too_large")
    assert_still_serves(http)


def test_declared_oversize_body_is_refused_before_it_is_sent(http: httpx.Client) -> None:
    host, port = str(http.base_url.host), http.base_url.port
    head = (
        f"POST /v1/route HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {LIMITS.max_body_bytes + 1}\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(head.encode())  # and no body: the answer must not wait for it
        reply = ""
        while '"code"' not in reply and (chunk := sock.recv(65536)):
            reply += chunk.decode()
    assert reply.startswith("HTTP/1.1 413 ")
    assert "application/problem+json" in reply and '"prompt_too_large"' in reply
    assert_still_serves(http)


def test_prompt_over_max_chars_gets_413(http: httpx.Client, prompts: list[str]) -> None:
    prompt = (prompts[3] + "\n") * (LIMITS.max_prompt_chars // len(prompts[3]) + 1)
    assert len(prompt.encode()) < LIMITS.max_body_bytes
    doc = assert_problem(http.post("/v1/route", json={"prompt": prompt}), 413, "prompt_too_large")
    assert str(LIMITS.max_prompt_chars) in doc["detail"]
    chat = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": prompt}]}  # refused, not cut
    assert_problem(http.post("/v1/route", json=chat), 413, "prompt_too_large")
    assert_still_serves(http)


def test_bad_batches(http: httpx.Client) -> None:
    assert_problem(http.post("/v1/route/batch", json={"requests": []}), 422, "invalid_prompt")
    too_many = {"requests": [{"prompt": "hi"}] * (LIMITS.max_batch_items + 1)}
    assert_problem(http.post("/v1/route/batch", json=too_many), 413, "prompt_too_large")
    one_bad = {"requests": [{"prompt": "hi"}, {"prompt": ""}]}
    doc = assert_problem(http.post("/v1/route/batch", json=one_bad), 422, "invalid_prompt")
    assert doc["detail"].startswith("requests[1]")
    assert_still_serves(http)


def test_unknown_path_and_method(http: httpx.Client) -> None:
    assert_problem(http.get("/v1/nope"), 404, "not_found")
    assert_problem(http.get("/v1/route"), 405, "method_not_allowed")


def _records_of(caplog: pytest.LogCaptureFixture, decision_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "request_id", None) == decision_id]


def test_decision_log_has_one_record_without_prompt_text(
    http: httpx.Client, prompts: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    prompt = prompts[4]
    with caplog.at_level(logging.INFO, logger="service.router.core"):
        decision_id = http.post("/v1/route", json={"prompt": prompt}).json()["decision_id"]
        # the record is written after the answer is sent (off the client's round trip)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _records_of(caplog, decision_id):
            time.sleep(0.01)
        time.sleep(0.05)  # room for a (wrong) second record to arrive
    records = _records_of(caplog, decision_id)
    assert len(records) == 1
    doc = records[0].__dict__
    for key in ("transport", "tier", "probabilities", "policy", "model_version",
                "feature_version", "latency_ms", "prompt_chars", "prompt_sha256"):
        assert key in doc
    assert doc["transport"] == "http" and doc["prompt_chars"] == len(prompt)
    assert len(doc["prompt_sha256"]) == 12
    json.dumps({k: doc[k] for k in ("probabilities", "policy", "latency_ms")})
    assert prompt[:40] not in caplog.text
