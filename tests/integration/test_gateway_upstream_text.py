"""Upstream answers whose JSON spells a lone UTF-16 surrogate (the escape ``"\\ud800"``, or its
three raw CESU-8 bytes, which Python's JSON parser lets pass): not valid Unicode text. The client
still gets its answer, as valid UTF-8 JSON with U+FFFD in place of each lone surrogate (streamed or
not, fresh, cached, drafted by a cascade or batched), and it is recorded."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_support import (  # noqa: F401  (fixtures)
    batch_upstreams_fixture,
    make_batch_gateway_fixture,
)
from gateway_support import (  # noqa: F401  (fixtures)
    EASY,
    HARD,
    STRONG,
    Gateway,
    Upstreams,
    cache_rows,
    make_gateway_fixture,
    postgres_url_fixture,
    upstreams_fixture,
    wait_until,
)

LONE = "lone \ud800 high, \udfff low, \U0001f600 pair"
#: What the client gets: each lone surrogate replaced, the pair (an emoji) kept.
SHOWN = "lone \ufffd high, \ufffd low, \U0001f600 pair"


def post(gw: Gateway, *, stream: bool = False, model: str = "weak", text: str = EASY,
         **extra: Any) -> httpx.Response:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}],
            **extra}
    with gw.http() as http:
        return http.post("/v1/chat/completions", json=body)


def statuses(gw: Gateway) -> list[tuple[int, str]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT status, tier FROM traffic ORDER BY rowid").fetchall()


def write_errors(gw: Gateway) -> str:
    with gw.http(None) as http:
        return next(line for line in http.get("/metrics").text.splitlines()
                    if line.startswith("tierwise_gateway_traffic_write_errors_total "))


def streamed_text(response: httpx.Response) -> tuple[str, list[bytes]]:
    events = [e for e in response.content.split(b"\n\n") if e]
    text = ""
    for event in events[:-1]:
        doc = json.loads(event.removeprefix(b"data: "))
        text += "".join(c["delta"].get("content") or "" for c in doc["choices"])
    return text, events


@pytest.mark.parametrize("encoding", ["ascii", "cesu"])
def test_a_lone_surrogate_in_a_json_answer_is_replaced_not_a_500(
    make_gateway: Any, upstreams: Upstreams, encoding: str
) -> None:
    gw = make_gateway()
    upstreams.weak.content, upstreams.weak.encoding = LONE, encoding
    response = post(gw)
    assert response.status_code == 200, response.text
    doc = json.loads(response.content.decode("utf-8"))  # strict UTF-8: no surrogate bytes
    assert doc["choices"][0]["message"]["content"] == SHOWN
    assert statuses(gw) == [(200, "weak")]
    assert write_errors(gw).endswith(" 0.0")


@pytest.mark.parametrize(("encoding", "usage"), [("ascii", False), ("ascii", True),
                                                  ("cesu", False)])
def test_a_lone_surrogate_in_a_stream_chunk_is_replaced(
    make_gateway: Any, upstreams: Upstreams, encoding: str, usage: bool
) -> None:
    gw = make_gateway()
    upstreams.weak.content, upstreams.weak.encoding = LONE, encoding
    options = {"stream_options": {"include_usage": True}} if usage else {}
    response = post(gw, stream=True, **options)
    assert response.status_code == 200
    response.content.decode("utf-8")
    text, events = streamed_text(response)
    assert text == SHOWN and b"\\ud800" not in response.content
    assert events[-1] == b"data: [DONE]"
    assert statuses(gw) == [(200, "weak")]
    assert write_errors(gw).endswith(" 0.0")


def test_a_cached_answer_with_a_lone_surrogate_replays_as_valid_text(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle, cache={"enabled": True})
    upstreams.weak.content = LONE
    first, again = post(gw, text=HARD), post(gw, text=HARD)
    assert len(upstreams.weak.requests) == 1 and again.headers["x-tierwise-cache"] == "exact"
    for response in (first, again):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == SHOWN
    assert statuses(gw) == [(200, "weak"), (200, "weak")]


def test_a_shared_cache_stores_an_answer_with_a_lone_surrogate(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path, postgres_url: str,
    tmp_path: Path,
) -> None:
    cache = {"enabled": True, "url": postgres_url, "refresh_s": 0.05}
    one: Gateway = make_gateway(fast_bundle, cache=cache)
    upstreams.weak.content = LONE
    assert post(one, text=HARD).json()["choices"][0]["message"]["content"] == SHOWN
    wait_until(lambda: cache_rows(postgres_url) == 1, "the answer committed to PostgreSQL")
    two: Gateway = make_gateway(fast_bundle, cache=cache,
                                traffic={"url": f"sqlite:///{tmp_path / 'two.db'}"})
    again = post(two, text=HARD)
    assert again.headers["x-tierwise-cache"] == "exact" and len(upstreams.weak.requests) == 1
    assert again.json()["choices"][0]["message"]["content"] == SHOWN


def test_a_cascade_draft_with_a_lone_surrogate_is_answered(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle, cascade={"min_prior": 0.0})
    upstreams.weak.content = LONE
    response = post(gw, model="tierwise-auto", text=HARD,
                    tierwise={"quality": 1.0, "cascade": True})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["tierwise"]["cascade"] == {"tried": ["weak"], "escalated": False,
                                          "reason": "accepted"}
    assert doc["choices"][0]["message"]["content"] == SHOWN
    assert [s for s, _ in statuses(gw)] == [200]


def test_a_batched_answer_with_a_lone_surrogate_is_served_as_valid_text(
    make_batch_gateway: Any, batch_upstreams: Upstreams
) -> None:
    gw = make_batch_gateway({"max_requests": 1})
    batch_upstreams.strong.content = LONE
    job = post(gw, model=STRONG, text=HARD, tierwise={"urgent": False})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 30
    with gw.http() as http:
        while True:
            done = http.get(f"/v1/tierwise/jobs/{job.json()['id']}")
            assert done.status_code == 200, done.text
            if done.json()["status"] in ("completed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    assert done.json()["status"] == "completed"
    assert done.json()["response"]["choices"][0]["message"]["content"] == SHOWN
    assert statuses(gw) == [(200, "strong")]
