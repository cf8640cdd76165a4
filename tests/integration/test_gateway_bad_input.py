"""Bodies the gateway cannot use get a 400 in the OpenAI envelope before any work is done:
nothing is forwarded, recorded or labelled (lone UTF-16 surrogates, excessive nesting)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    EASY,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)


def chat_body(content: str = EASY, **extra: Any) -> dict[str, Any]:
    return {"model": "tierwise-auto", "messages": [{"role": "user", "content": content}],
            **extra}


def post(gw: Gateway, path: str, raw: bytes) -> httpx.Response:
    with gw.http() as http:
        return http.post(path, content=raw, headers={"content-type": "application/json"})


def count(gw: Gateway, table: str) -> int:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        found = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(found[0])


def assert_bad_request(response: httpx.Response, *words: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error["message"]
    return error


def answer(gw: Gateway, **extra: Any) -> str:
    """The decision id of one good request (so feedback has something to label)."""
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=chat_body(**extra))
    assert response.status_code == 200, response.text
    return response.headers["x-tierwise-decision-id"]


# a lone surrogate as a JSON escape, and as the raw (CESU-style) UTF-8 bytes of one
LONE = [
    json.dumps(chat_body("a \ud800 b")).encode(),
    json.dumps(chat_body(EASY, user="u\udfff")).encode(),
    json.dumps(chat_body(EASY, metadata={"k\udc00": "v"})).encode(),
    json.dumps(chat_body([{"type": "text", "text": "\udbff"}])).encode(),
    json.dumps(chat_body("x")).replace('"x"', '"\\ud83d"').encode(),
    json.dumps(chat_body("x"), ensure_ascii=False).replace('"x"', '"\ud800"').encode(
        "utf-8", "surrogatepass"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("raw", LONE, ids=["content", "user", "key", "part", "high", "raw_bytes"])
def test_lone_surrogates_in_chat_are_a_400_and_nothing_is_half_recorded(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, tmp_path: Path, raw: bytes,
    stream: bool,
) -> None:
    gw = make_gateway(fast_bundle, traffic={"url": f"sqlite:///{tmp_path / 's.db'}",
                                            "store_prompts": True})
    if stream:
        raw = raw.replace(b'"model"', b'"stream": true, "model"', 1)
    assert_bad_request(post(gw, "/v1/chat/completions", raw), "surrogate")
    assert upstreams.weak.requests == upstreams.strong.requests == []
    assert count(gw, "traffic") == 0


def test_paired_surrogates_are_fine(
    make_gateway: Any, fast_bundle: Path, tmp_path: Path
) -> None:
    gw = make_gateway(fast_bundle, traffic={"url": f"sqlite:///{tmp_path / 'p.db'}",
                                            "store_prompts": True})
    raw = json.dumps(chat_body("smile \U0001f600 please")).encode()  # "\ud83d\ude00" on the wire
    assert b"\\ud83d\\ude00" in raw
    response = post(gw, "/v1/chat/completions", raw)
    assert response.status_code == 200, response.text
    assert count(gw, "traffic") == 1


def test_lone_surrogate_with_the_remote_router_is_a_400(
    make_gateway: Any, fast_bundle: Path, run_service: Any, upstreams: Upstreams
) -> None:
    remote = run_service(fast_bundle)
    gw = make_gateway(router={"address": remote.grpc_target, "timeout_s": 5})
    assert_bad_request(post(gw, "/v1/chat/completions", LONE[0]), "surrogate")
    assert upstreams.weak.requests == upstreams.strong.requests == []
    assert answer(gw)  # the gateway still routes good requests through the remote router


def test_lone_surrogate_in_feedback_is_a_400(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    decision = answer(gw)
    for doc in ({"decision_id": decision, "thumbs": "up", "comment": "nice \ud800"},
                {"decision_id": decision + "\udc00", "thumbs": "up"}):
        assert_bad_request(post(gw, "/v1/feedback", json.dumps(doc).encode()), "surrogate")
    assert count(gw, "feedback") == 0


def nested(depth: int, leaf: str = "[]") -> str:
    return "[" * (depth - 1) + leaf + "]" * (depth - 1)


@pytest.mark.parametrize("depth", [2000, 150])  # past json's recursion limit, and past ours
def test_deep_nesting_in_chat_is_a_400(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, depth: int
) -> None:
    gw = make_gateway(fast_bundle, cache={"enabled": True})
    raw = json.dumps(chat_body()).replace('"model"', f'"metadata": {nested(depth)}, "model"')
    assert_bad_request(post(gw, "/v1/chat/completions", raw.encode()), "deeper than 100")
    assert upstreams.weak.requests == upstreams.strong.requests == []
    assert count(gw, "traffic") == 0


def test_nesting_within_the_limit_is_forwarded(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle, cache={"enabled": True})
    raw = json.dumps(chat_body()).replace('"model"', f'"prediction": {nested(99)}, "model"')
    response = post(gw, "/v1/chat/completions", raw.encode())
    assert response.status_code == 200, response.text
    sent = [*upstreams.weak.requests, *upstreams.strong.requests]
    assert json.dumps(sent[0]["prediction"], separators=(",", ":")) == nested(99)


@pytest.mark.parametrize("depth", [2000, 150])
def test_deep_nesting_in_feedback_is_a_400(
    make_gateway: Any, fast_bundle: Path, depth: int
) -> None:
    gw = make_gateway(fast_bundle)
    answer(gw)
    raw = '{"decision_id": ' + nested(depth, '"x"') + ', "thumbs": "up"}'
    assert_bad_request(post(gw, "/v1/feedback", raw.encode()), "deeper than 100")
    assert count(gw, "feedback") == 0
