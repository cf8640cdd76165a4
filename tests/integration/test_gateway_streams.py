"""Streams the client abandons: recorded (status 499) with the tokens it was sent so far."""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway_support import (  # noqa: F401  (fixtures)
    EASY,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
    wait_until,
)

from router_model.encoder import load_tokenizer, word_piece_ids


def record(gw: Gateway, decision_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM traffic WHERE decision_id = ?",
                           (decision_id,)).fetchone()
    return dict(row) if row is not None else None


def test_an_abandoned_stream_records_the_tokens_it_delivered(
    make_gateway: Any, upstreams: Upstreams
) -> None:
    gw = make_gateway(default_tier="weak")
    upstreams.weak.mode, upstreams.weak.trickle_s = "trickle", 0.2  # a chunk every 0.2 s
    body = {"model": "weak", "stream": True, "messages": [{"role": "user", "content": EASY}]}
    received = []
    with gw.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        decision = response.headers["x-tierwise-decision-id"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line)
            if len(received) == 3:  # the role chunk, "The", " answer": then the client leaves
                break
    wait_until(lambda: record(gw, decision) is not None, "the abandoned stream's record")
    row = record(gw, decision)
    assert row is not None and row["status"] == 499
    assert row["usage_source"] == "estimated" and row["input_tokens"] > 0
    tokenizer = load_tokenizer()
    delivered = len(word_piece_ids(tokenizer, ["The answer"])[0])
    whole = len(word_piece_ids(tokenizer, ["The answer is forty-two."])[0])
    assert delivered <= row["output_tokens"] < whole  # what was sent, not the whole answer
    assert row["cost_usd"] > 0
