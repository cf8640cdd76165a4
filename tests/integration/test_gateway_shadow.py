"""Shadow labels: sampled routed requests get the other tiers' answers graded by a fake judge,
stored apart from feedback, with faults (no rating, failing or slow tier, full queue, spent cap)
counted and never felt by the client."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    ADMIN_KEY,
    EASY,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)

ANSWER_MARK = "[The Start of Assistant's Answer]"


def judge_reply(rating_of: dict[str, str]) -> Any:
    """A fake judge on the strong upstream: grading prompts get a verdict by the graded
    answer's text; any other prompt gets the strong tier's own answer."""

    def reply(body: dict[str, Any]) -> str:
        text = str(body["messages"][-1]["content"])
        if not text.startswith("[Instruction]"):
            return "strong answer"
        answer = text.split(ANSWER_MARK)[1]
        return next(v for k, v in rating_of.items() if k in answer)

    return reply


def shadow_gateway(make_gateway: Any, bundle: Path, ups: Upstreams, **shadow: Any) -> Gateway:
    ups.weak.content = "weak answer"
    ups.strong.reply = judge_reply({"weak answer": "Weak. Rating: [[2]]",
                                    "strong answer": "Fine. Rating: [[10]]"})
    return make_gateway(bundle, shadow={"rate": 1.0, "judge": "strong", **shadow})


def ask(gw: Gateway, stream: bool = False) -> tuple[str, str]:
    """(decision id, answering tier) of one routed request."""
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={
            "model": "tierwise-auto", "stream": stream,
            "messages": [{"role": "user", "content": EASY}]})
    assert response.status_code == 200, response.text
    return response.headers["x-tierwise-decision-id"], response.headers["x-tierwise-tier"]


def counted(gw: Gateway, result: str) -> float:
    with gw.http() as http:
        text = http.get("/metrics").text
    key = f'tierwise_gateway_shadow_samples_total{{result="{result}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith(key)), 0.0)


def wait_counted(gw: Gateway, result: str, n: float = 1.0) -> None:
    deadline = time.monotonic() + 10
    while counted(gw, result) < n:
        assert time.monotonic() < deadline, f"no shadow sample counted {result!r}"
        time.sleep(0.05)


def judge_rows(gw: Gateway) -> list[tuple[Any, ...]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT decision_id, tier, rating, score, judge, cost_usd > 0, "
                            "judge_cost_usd > 0 FROM judge_labels ORDER BY tier").fetchall()


@pytest.mark.parametrize("stream", [False, True])
def test_every_tier_is_graded_and_stored_apart_from_feedback(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, stream: bool
) -> None:
    gw = shadow_gateway(make_gateway, fast_bundle, upstreams)
    decision, tier = ask(gw, stream)
    wait_counted(gw, "labeled")
    rows = judge_rows(gw)
    paid = {"weak": tier != "weak", "strong": tier != "strong"}  # the client's tier: paid already
    assert rows == [(decision, "strong", 10, 1.0, "gpt-4-1106-preview", paid["strong"], True),
                    (decision, "weak", 2, 1 / 9, "gpt-4-1106-preview", paid["weak"], True)]
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone() == (0,)
        assert conn.execute("SELECT prompt FROM traffic").fetchall() == [(None,)]
    shadow_calls = [r for r in upstreams.weak.requests + upstreams.strong.requests
                    if "stream" not in r and "[Instruction]" not in str(r["messages"])]
    assert len(shadow_calls) == 1  # the other tier, once, without the client's stream flag
    with gw.http(ADMIN_KEY) as http:
        report = http.get("/v1/admin/savings").json()
    assert report["shadow"]["decisions"] == 1 and report["shadow"]["labels"] == 2
    assert report["shadow"]["cost_usd"] > 0
    assert report["net_savings_usd"] == pytest.approx(
        report["total"]["savings_usd"] - report["shadow"]["cost_usd"])
    with gw.http() as http:
        metrics = http.get("/metrics").text
    assert 'tierwise_gateway_lever_savings_usd{lever="shadow"} -' in metrics


def test_a_judge_reply_without_a_rating_is_asked_again_then_dropped(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = shadow_gateway(make_gateway, fast_bundle, upstreams)
    upstreams.strong.reply = judge_reply({"weak answer": "I like it.",
                                          "strong answer": "Rating: [[9]]"})
    ask(gw)
    wait_counted(gw, "unparseable")
    assert judge_rows(gw) == []
    graded_weak = [r for r in upstreams.strong.requests
                   if "weak answer" in str(r["messages"][-1]["content"]).split(ANSWER_MARK)[-1]]
    assert len(graded_weak) == 2  # asked once more, then the sample is dropped


@pytest.mark.parametrize("mode", ["fail", "stall"])
def test_a_failing_or_slow_tier_leaves_the_client_alone(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, mode: str
) -> None:
    # the shadow call may wait 2 s: a client that waited for it would take 2 s, not under 1.5
    gw = shadow_gateway(make_gateway, fast_bundle, upstreams, timeout_s=2.0)
    _, tier = ask(gw)
    other = upstreams.strong if tier == "weak" else upstreams.weak
    if tier == "strong":  # the judge must answer: fail the weak tier instead
        other = upstreams.weak
    other.mode, other.stall_s = mode, 3.0
    start = time.monotonic()
    _, again = ask(gw)
    assert again == tier and time.monotonic() - start < 1.5  # no wait on the shadow call
    wait_counted(gw, "tier_failed")
    wait_counted(gw, "no_other_answer")
    assert counted(gw, "labeled") <= 1  # the first request's sample only


def test_a_full_queue_and_a_spent_cap_drop_samples(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = shadow_gateway(make_gateway, fast_bundle, upstreams, queue=1, concurrency=1)
    upstreams.strong.mode, upstreams.strong.stall_s = "stall", 0.5  # the judge is slow
    for _ in range(4):
        ask(gw)
    wait_counted(gw, "dropped_full")
    capped = shadow_gateway(make_gateway, fast_bundle, upstreams, max_usd_per_day=0)
    upstreams.strong.mode = "ok"
    ask(capped)
    wait_counted(capped, "over_budget")
