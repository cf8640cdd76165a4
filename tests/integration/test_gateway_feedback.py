"""``POST /v1/feedback``: refusals say why, and a label only lands on the caller's own decision."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    EASY,
    Gateway,
    make_gateway_fixture,
    upstreams_fixture,
)

OTHER_KEY = "tw-client-key-2"  # the gateway's second client key


def decide(gw: Gateway) -> str:
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={
            "model": "tierwise-auto", "messages": [{"role": "user", "content": EASY}]})
    assert response.status_code == 200, response.text
    return response.headers["x-tierwise-decision-id"]


def labels(gw: Gateway) -> list[tuple[str, float]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT decision_id, value FROM feedback ORDER BY id").fetchall()


@pytest.mark.parametrize("label", [{"score": 0.5, "thumbs": "up"}, {}, {"score": None}])
def test_a_refused_label_says_why(
    make_gateway: Any, fast_bundle: Path, label: dict[str, Any]
) -> None:
    gw = make_gateway(fast_bundle)
    decision = decide(gw)
    with gw.http() as http:
        response = http.post("/v1/feedback", json={"decision_id": decision, **label})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == (
        "give exactly one of 'score' (0..1) and 'thumbs' ('up' or 'down')")
    assert "pydantic" not in response.text and error["type"] == "invalid_request_error"
    assert labels(gw) == []


def test_only_the_key_that_made_a_decision_can_label_it(
    make_gateway: Any, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle)
    decision = decide(gw)  # made with CLIENT_KEY
    with gw.http(OTHER_KEY) as other, gw.http() as own:
        foreign = other.post("/v1/feedback", json={"decision_id": decision, "thumbs": "down"})
        unknown = other.post("/v1/feedback", json={"decision_id": "no-such-id", "thumbs": "down"})
        # another key's decision looks exactly like one that does not exist
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
        assert (foreign.json()["error"]["message"].replace(decision, "ID")
                == unknown.json()["error"]["message"].replace("no-such-id", "ID"))
        assert own.post("/v1/feedback", json={"decision_id": decision, "thumbs": "up"}).is_success
    assert labels(gw) == [(decision, 1.0)]


def test_the_docs_document_the_feedback_body(make_gateway: Any, fast_bundle: Path) -> None:
    # docs/gateway.md's examples, with a real decision id, are accepted as written
    import json
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    section = doc[doc.index("Feedback: `POST /v1/feedback`"):]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    examples = [json.loads(line) for line in block.group(1).splitlines()]
    assert [sorted(e) for e in examples] == [["decision_id", "score"],
                                             ["comment", "decision_id", "thumbs"]]
    for word in ("x-tierwise-decision-id", "[0, 1]", '`"up"`', '`"down"`', "404", "400", "mean"):
        assert word in section[:1200]
    gw = make_gateway(fast_bundle)
    decision = decide(gw)
    with gw.http() as http:
        for example in examples:
            assert http.post("/v1/feedback", json={**example, "decision_id": decision}).is_success
    assert labels(gw) == [(decision, 0.8), (decision, 0.0)]
