"""The response cache's controls through a real gateway: per-request modes (body and header),
bad modes as 400s, negative feedback evicting the answer, rejections counted by reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    STRONG,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)
from test_gateway_cache import metric

QUESTION = "What is the capital of France?"


def post(gw: Gateway, text: str, headers: dict[str, str] | None = None,
         **knob: Any) -> Any:
    doc: dict[str, Any] = {"model": STRONG, "messages": [{"role": "user", "content": text}]}
    if knob:
        doc["tierwise"] = knob
    with gw.http() as http:
        return http.post("/v1/chat/completions", json=doc, headers=headers or {})


def layer(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["tierwise"]["cache"]


def test_a_request_can_ask_for_exact_or_no_cache(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw: Gateway = make_gateway(fast_bundle, cache={"enabled": True})
    assert layer(post(gw, QUESTION, cache="off")) is None  # not stored either
    assert layer(post(gw, QUESTION)) is None
    assert len(upstreams.strong.requests) == 2
    assert layer(post(gw, QUESTION)) == "exact"
    assert layer(post(gw, QUESTION.lower())) == "canonical"
    assert layer(post(gw, QUESTION.lower(), cache="exact")) is None
    assert layer(post(gw, QUESTION.upper(), {"x-tierwise-cache": "exact"})) is None
    assert layer(post(gw, QUESTION, {"x-tierwise-cache": "off"})) is None
    # the body wins over the header
    assert layer(post(gw, QUESTION.title(), {"x-tierwise-cache": "off"}, cache="auto")) == (
        "canonical")
    assert len(upstreams.strong.requests) == 5


@pytest.mark.parametrize(("headers", "knob", "param"), [
    ({"x-tierwise-cache": "semantic-please"}, {}, "x-tierwise-cache"),
    ({}, {"cache": "never"}, "tierwise.cache"),
    ({}, {"cache": False}, "tierwise.cache"),
])
def test_a_bad_cache_mode_is_a_400(
    make_gateway: Any, fast_bundle: Path, headers: dict[str, str], knob: dict[str, Any],
    param: str,
) -> None:
    gw: Gateway = make_gateway(fast_bundle, cache={"enabled": True})
    response = post(gw, QUESTION, headers, **knob)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_negative_feedback_evicts_a_cached_answer(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw: Gateway = make_gateway(fast_bundle, cache={"enabled": True})
    upstreams.strong.content = "Lyon."
    post(gw, QUESTION)
    served = post(gw, QUESTION.lower())
    assert layer(served) == "canonical"
    with gw.http() as http:
        good = http.post("/v1/feedback", json={"decision_id": served.json()["tierwise"][
            "decision_id"], "thumbs": "up"})
        assert good.status_code == 200, good.text
        assert layer(post(gw, QUESTION)) == "exact"
        bad = http.post("/v1/feedback", json={"decision_id": served.json()["tierwise"][
            "decision_id"], "thumbs": "down"})
        assert bad.status_code == 200, bad.text
    assert metric(gw, 'tierwise_gateway_cache_evictions_total{reason="feedback"}') == 1.0
    upstreams.strong.content = "Paris."
    fresh = post(gw, QUESTION)
    assert layer(fresh) is None
    assert fresh.json()["choices"][0]["message"]["content"] == "Paris."
    assert len(upstreams.strong.requests) == 2


def test_a_rejected_semantic_candidate_is_a_miss_counted_by_reason(
    make_gateway: Any, upstreams: Upstreams, full_bundle: Path
) -> None:
    gw: Gateway = make_gateway(full_bundle, cache={"enabled": True, "semantic": True,
                                                   "similarity": 0.5})
    post(gw, QUESTION)
    other = post(gw, "What is the capital of Italy?")
    assert layer(other) is None
    assert metric(gw, 'tierwise_gateway_cache_rejections_total{reason="entities"}') == 1.0
    same = post(gw, "What's the capital of France?").json()["tierwise"]
    assert same["cache"] == "semantic" and same["similarity"] >= 0.9
    assert len(upstreams.strong.requests) == 2
