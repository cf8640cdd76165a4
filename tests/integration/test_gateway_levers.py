"""The savings ledger on a live gateway: cascade, trimming and cache rows, in hand-computed USD.

Prices (``gateway_support.config_doc``): weak 0.6 / 0.6, strong 10 / 30 USD per 1M tokens; the
fake upstreams report 11 prompt and 7 completion tokens. So one weak call costs
(11 * 0.6 + 7 * 0.6) / 1e6 = 10.8e-6 USD and one strong call (11 * 10 + 7 * 30) / 1e6 = 320e-6.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    ADMIN_KEY,
    HARD,
    WEAK,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)

from router_model.encoder import load_tokenizer, word_piece_ids
from router_model.records import TrafficRecord
from router_model.tiers import Tier
from training.traffic import read_decisions

WEAK_CALL = 10.8e-6
STRONG_CALL = 320e-6
#: quality 1.0 always routes to the top tier, so the cascade has a cheaper tier to draft on.
TOP = {"quality": 1.0, "cascade": True}


@pytest.fixture(name="ups")
def ups_fixture(upstreams: Upstreams) -> Iterator[Upstreams]:
    """The fake upstreams, their answer settings restored after each test."""
    yield upstreams
    for u in (upstreams.weak, upstreams.strong):
        u.finish_reason, u.content, u.logprob = "stop", None, None


def ask(gw: Gateway, knob: dict[str, Any], model: str = "tierwise-auto", **extra: Any
        ) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": HARD}], "tierwise": knob,
            **extra}
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def stored(gw: Gateway, decision_id: str) -> TrafficRecord:
    by_id = {d.record.decision_id: d.record for d in read_decisions(gw.config.traffic.url)}
    return by_id[decision_id]


def savings(gw: Gateway) -> dict[str, Any]:
    with gw.http(ADMIN_KEY) as http:
        report: dict[str, Any] = http.get("/v1/admin/savings").json()
    return report


@pytest.mark.parametrize(("setup", "reason"), [
    ({"finish_reason": "length"}, "truncated"),
    ({"content": ""}, "empty"),
    ({"content": "I'm sorry, but I can't help with that."}, "refusal"),
    ({"logprob": -3.0}, "low_logprob (-3.00 < -1)"),
])
def test_a_doubtful_draft_escalates_and_both_calls_are_paid(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path, setup: dict[str, Any], reason: str
) -> None:
    gw = make_gateway(fast_bundle, cascade={"min_prior": 0.0, "request_logprobs": True})
    for name, value in setup.items():
        setattr(ups.weak, name, value)
    doc = ask(gw, TOP)
    info = doc["tierwise"]
    assert info["cascade"] == {"tried": ["weak", "strong"], "escalated": True, "reason": reason}
    assert (len(ups.weak.requests), len(ups.strong.requests)) == (1, 1)
    assert info["tier"] == "strong" and doc["choices"][0]["finish_reason"] == "stop"
    record = stored(gw, info["decision_id"])
    assert record.cost_usd == pytest.approx(WEAK_CALL + STRONG_CALL)  # 330.8e-6
    assert record.top_tier_cost_usd == pytest.approx(STRONG_CALL)
    # the routed tier alone would have cost 320e-6: the cascade lost the draft's 10.8e-6
    assert record.levers == pytest.approx({"cascade": -WEAK_CALL})
    assert record.routing_savings_usd == pytest.approx(0.0)
    assert info["levers"] == pytest.approx(record.levers)


@pytest.mark.parametrize(("mode", "finish"), [
    ("fail", "stop"), ("fail", "length"), ("string_message", "stop")])
def test_a_failed_draft_never_falls_over_to_the_routed_tier(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path, mode: str, finish: str
) -> None:
    # the routed tier's answer is no draft: not "accepted" as one, nor judged and paid twice
    gw = make_gateway(fast_bundle, cascade={"min_prior": 0.0})
    ups.weak.mode, ups.strong.finish_reason = mode, finish
    info = ask(gw, TOP)["tierwise"]
    assert info["cascade"] == {"tried": ["weak", "strong"], "escalated": True,
                               "reason": "draft_failed"}
    assert (len(ups.weak.requests), len(ups.strong.requests)) == (1, 1)
    assert info["tier"] == "strong" and info["failovers"] == 0
    record = stored(gw, info["decision_id"])
    assert record.cost_usd == pytest.approx(STRONG_CALL)
    assert record.levers == pytest.approx({"cascade": 0.0})


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_a_draft_stopped_by_the_clients_own_limit_answers(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path, limit: str
) -> None:
    # the routed tier would stop at the same limit: escalating pays twice for the same cut
    gw = make_gateway(fast_bundle, cascade={"min_prior": 0.0})
    ups.weak.finish_reason = ups.strong.finish_reason = "length"
    doc = ask(gw, TOP, **{limit: 7})
    info = doc["tierwise"]
    assert info["cascade"] == {"tried": ["weak"], "escalated": False, "reason": "accepted"}
    assert (len(ups.weak.requests), len(ups.strong.requests)) == (1, 0)
    assert doc["choices"][0]["finish_reason"] == "length"
    assert stored(gw, info["decision_id"]).cost_usd == pytest.approx(WEAK_CALL)


def test_a_good_draft_answers_alone(make_gateway: Any, ups: Upstreams, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle, cascade={"min_prior": 0.0, "request_logprobs": True})
    ups.weak.logprob = -0.2  # confident: above the default -1.0
    doc = ask(gw, TOP)
    info = doc["tierwise"]
    assert info["cascade"] == {"tried": ["weak"], "escalated": False, "reason": "accepted"}
    assert (len(ups.weak.requests), len(ups.strong.requests)) == (1, 0)
    # the gateway asked the draft for logprobs; the client, who did not, gets none back
    assert ups.weak.requests[0]["logprobs"] is True and "logprobs" not in doc["choices"][0]
    assert info["tier"] == "weak" and info["decided_tier"] == "strong"
    record = stored(gw, info["decision_id"])
    assert record.cost_usd == pytest.approx(WEAK_CALL)
    assert record.levers == pytest.approx({"cascade": STRONG_CALL - WEAK_CALL})  # 309.2e-6
    assert record.routing_savings_usd == pytest.approx(0.0)
    report = savings(gw)
    assert report["total"]["savings_usd"] == pytest.approx(STRONG_CALL - WEAK_CALL)
    assert report["total"]["levers"]["cascade"] == pytest.approx(STRONG_CALL - WEAK_CALL)
    assert report["lever_share_pct"]["cascade"] == pytest.approx(100.0, abs=0.05)
    assert report["lever_share_pct"]["routing"] == pytest.approx(0.0, abs=0.05)


def test_logprobs_are_only_judged_when_someone_asked_for_them(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle, cascade={"min_prior": 0.0})  # request_logprobs off
    ups.weak.logprob, ups.strong.logprob = -3.0, -0.1
    quiet = ask(gw, TOP)  # no logprobs asked, none returned: nothing to judge, the draft stands
    assert quiet["tierwise"]["cascade"]["reason"] == "accepted"
    assert "logprobs" not in ups.weak.requests[-1]
    doc = ask(gw, TOP, logprobs=True)  # the client asks: they are judged, and escalate
    assert doc["tierwise"]["cascade"]["reason"] == "low_logprob (-3.00 < -1)"
    assert doc["tierwise"]["tier"] == "strong" and "logprobs" in doc["choices"][0]


def test_cascade_is_opt_in_gated_by_the_prior_and_refused_for_streams(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle, cascade={"enabled": True, "min_prior": 1.0})
    # the router's prior for the weak tier is below 1: no draft is worth paying for
    info = ask(gw, {"quality": 1.0})["tierwise"]
    assert info["cascade"]["tried"] == ["strong"] and not info["cascade"]["escalated"]
    assert info["cascade"]["reason"].startswith("prior (")
    assert (len(ups.weak.requests), len(ups.strong.requests)) == (0, 1)
    assert stored(gw, info["decision_id"]).levers == {}
    # the request's own knob switches the config's default off
    assert ask(gw, {"quality": 1.0, "cascade": False})["tierwise"]["cascade"] is None
    # a named model is never cascaded
    assert ask(gw, {"cascade": True}, model="strong")["tierwise"]["cascade"] is None
    body = {"model": "tierwise-auto", "messages": [{"role": "user", "content": HARD}],
            "stream": True, "tierwise": TOP}
    with gw.http() as http:
        refused = http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tierwise.cascade"


def test_trimming_saves_the_removed_tokens_at_the_tier_price(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle)
    system = "You are a careful assistant. Answer in one short paragraph. " * 5
    messages = [{"role": "system", "content": system}, {"role": "system", "content": system},
                {"role": "user", "content": HARD}]
    with gw.http() as http:
        doc = http.post("/v1/chat/completions", json={
            "model": "tierwise-auto", "messages": messages,
            "tierwise": {"trim": True, "quality": 0.0}}).json()
    removed = len(word_piece_ids(load_tokenizer(), [system])[0])  # the repeated system message
    assert doc["tierwise"]["trimmed_tokens"] == removed > 0
    record = stored(gw, doc["tierwise"]["decision_id"])
    assert record.cost_usd == pytest.approx(WEAK_CALL)
    assert record.levers == pytest.approx({"trim": removed * 0.6e-6})
    # the baseline is the untrimmed request on the top tier
    assert record.top_tier_cost_usd == pytest.approx(((11 + removed) * 10 + 7 * 30) / 1e6)
    assert record.routing_savings_usd == pytest.approx(
        record.top_tier_cost_usd - Tier("weak", WEAK, 0.6, 0.6).cost(11 + removed, 7))


def test_cache_hits_are_recorded_and_never_labels(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle, cache={"enabled": True})
    # routed (to weak): a pass-through request's baseline is its own model, not the top tier
    first = ask(gw, {"quality": 0.0})["tierwise"]
    again = ask(gw, {"quality": 0.0})["tierwise"]
    assert again["cache"] == "exact" and len(ups.weak.requests) == 1
    hit = stored(gw, again["decision_id"])
    assert (hit.source, hit.tier, hit.status, hit.cost_usd) == ("cache", "weak", 200, 0.0)
    # the record says the layer and the similarity, as the response does
    assert (hit.cache_layer, hit.cache_similarity) == ("exact", again["similarity"]) == (
        "exact", 1.0)
    assert hit.levers == pytest.approx({"cache": WEAK_CALL})
    assert hit.top_tier_cost_usd == pytest.approx(STRONG_CALL)
    assert again["saved_usd"] == pytest.approx(WEAK_CALL) and again["cost_usd"] == 0.0
    miss = stored(gw, first["decision_id"])
    assert (miss.source, miss.cache_layer, miss.cache_similarity) == ("router", "", None)
    report = savings(gw)
    # two requests, one paid: saved 2 * 320e-6 - 10.8e-6, of which the cache's 10.8e-6
    total = 2 * STRONG_CALL - WEAK_CALL
    assert report["total"]["requests"] == 2
    assert report["total"]["savings_usd"] == pytest.approx(total)
    assert report["total"]["levers"]["cache"] == pytest.approx(WEAK_CALL)
    assert report["total"]["levers"]["routing"] == pytest.approx(total - WEAK_CALL)
    assert report["lever_share_pct"]["cache"] == pytest.approx(100 * WEAK_CALL / total, abs=0.05)
    with gw.http() as http:
        exposed = http.get("/metrics").text
    gauges = {line.split('"')[1]: float(line.split()[-1]) for line in exposed.splitlines()
              if line.startswith("tierwise_gateway_lever_savings_usd{")}
    assert gauges["cache"] == pytest.approx(WEAK_CALL)
    assert gauges["routing"] == pytest.approx(total - WEAK_CALL)
    assert gauges["trim"] == gauges["batch"] == gauges["cascade"] == 0.0


def test_a_cached_escalated_answer_saves_the_answer_not_the_draft(
    make_gateway: Any, ups: Upstreams, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle, cache={"enabled": True}, cascade={"min_prior": 0.0})
    ups.weak.content = "I'm sorry, but I can't help with that."
    first = ask(gw, TOP)["tierwise"]
    assert first["cascade"]["reason"] == "refusal" and first["cost_usd"] == pytest.approx(
        WEAK_CALL + STRONG_CALL)
    again = ask(gw, TOP)["tierwise"]
    assert (again["cache"], again["tier"]) == ("exact", "strong")
    # without the cache this request would have cost strong's answer, not the draft again
    hit = stored(gw, again["decision_id"])
    assert hit.levers == pytest.approx({"cache": STRONG_CALL})
    assert hit.routing_savings_usd == pytest.approx(0.0)
    assert again["saved_usd"] == pytest.approx(STRONG_CALL)
    report = savings(gw)
    assert report["total"]["levers"]["routing"] == pytest.approx(0.0)
    assert report["total"]["levers"]["cache"] == pytest.approx(STRONG_CALL)
    assert report["total"]["levers"]["cascade"] == pytest.approx(-WEAK_CALL)
    with gw.http() as http:
        exposed = http.get("/metrics").text
    saved = [float(line.split()[-1]) for line in exposed.splitlines()
             if line.startswith("tierwise_gateway_cache_saved_usd_total ")]
    assert saved == [pytest.approx(STRONG_CALL)]
