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
