"""The cascade's checks and the savings ledger's arithmetic, on hand-computed examples."""

from __future__ import annotations

from typing import Any

import pytest

from router_model.policy import Policy
from router_model.tiers import Tier
from service.gateway.config import CascadeConfig
from service.gateway.decisions.source import Decision
from service.gateway.errors import BadRequest
from service.gateway.levers.cascade import (
    CascadeOutcome,
    answer_problem,
    cascade_wanted,
    client_limited,
    draft_allowed,
    draft_tier,
    prior,
)
from service.gateway.records import Usage, cache_spend, spend
from service.gateway.requests import KnobIn

SMALL, MID = Tier("small", "s", 1.0, 2.0), Tier("mid", "m", 4.0, 8.0)
BIG = Tier("big", "b", 10.0, 30.0)
TIERS = (SMALL, MID, BIG)
USAGE = Usage(1000, 500, "upstream")  # small 2000e-6, mid 8000e-6, big 25000e-6 USD


def decision(tier: str = "big", min_tier: str = "small") -> Decision:
    return Decision("d", tier, {"small": 0.25, "mid": 0.35, "big": 0.4}, 0.9, min_tier, "big",
                    "v", 1, 0.1)


def answer(text: str = "Paris.", finish: str = "stop", logprobs: list[float] | None = None
           ) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish,
                              "message": {"role": "assistant", "content": text}}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": v} for v in logprobs]}
    return {"choices": [choice]}


def test_answer_checks() -> None:
    assert answer_problem(answer(), -1.0) is None
    assert answer_problem(answer(finish="length"), -1.0) == "truncated"
    assert answer_problem(answer(text="  "), -1.0) == "empty"
    assert answer_problem({"choices": []}, -1.0) == "empty"
    assert answer_problem(answer(text="I\u2019m sorry, but I can\u2019t do that."), -1.0) == \
        "refusal"
    assert answer_problem(answer(text="Why I can't help loving maths"), -1.0) is None
    # mean of (-0.5, -2.0) = -1.25: below -1.0 escalates, above -1.5 passes
    assert answer_problem(answer(logprobs=[-0.5, -2.0]), -1.0) == "low_logprob (-1.25 < -1)"
    assert answer_problem(answer(logprobs=[-0.5, -2.0]), -1.5) is None


def test_draft_tier_and_prior() -> None:
    assert draft_tier(TIERS, "big", decision(), None) == SMALL
    assert draft_tier(TIERS, "big", decision(min_tier="mid"), None) == MID
    assert draft_tier(TIERS, "big", decision(), Policy(allowed_tiers=("mid", "big"))) == MID
    assert draft_tier(TIERS, "small", decision("small"), None) is None
    assert prior(TIERS, SMALL, decision()) == pytest.approx(0.25)
    assert prior(TIERS, MID, decision()) == pytest.approx(0.6)


def test_cascade_wanted() -> None:
    on, off = CascadeConfig(enabled=True), CascadeConfig()
    assert cascade_wanted(on, None, False) and not cascade_wanted(off, None, False)
    assert cascade_wanted(off, KnobIn(cascade=True), False)
    assert not cascade_wanted(on, KnobIn(cascade=False), False)
    assert not cascade_wanted(on, None, True)  # the config's default leaves streams alone
    with pytest.raises(BadRequest):
        cascade_wanted(off, KnobIn(cascade=True), True)


def test_ledger_without_levers_is_all_routing() -> None:
    money = spend(MID, USAGE, TIERS[-1])
    assert (money.cost_usd, money.top_tier_cost_usd, money.levers) == \
        (pytest.approx(0.008), pytest.approx(0.025), {})


def test_ledger_trim_and_accepted_cascade() -> None:
    # routed to big, the small draft answered; 200 tokens had been trimmed
    outcome = CascadeOutcome(BIG, ("small",), False, "accepted", drafted=True)
    money = spend(SMALL, USAGE, TIERS[-1], trimmed=200, cascade=outcome)
    assert money.cost_usd == pytest.approx(0.002)
    assert money.top_tier_cost_usd == pytest.approx((1200 * 10 + 500 * 30) / 1e6)  # 0.027
    # trimming saved 200 tokens at the routed tier's input price; the cascade big - small
    assert money.levers == pytest.approx({"trim": 0.002, "cascade": 0.023})
    routing = money.top_tier_cost_usd - money.cost_usd - sum(money.levers.values())
    assert routing == pytest.approx(0.0)  # routed to the top tier: routing saved nothing


def test_ledger_escalated_cascade_is_negative() -> None:
    # routed to mid, the small draft (2000e-6) was thrown away, mid answered (8000e-6)
    outcome = CascadeOutcome(MID, ("small", "mid"), True, "truncated", drafted=True,
                             draft_cost_usd=0.002)
    money = spend(MID, USAGE, TIERS[-1], cascade=outcome)
    assert money.cost_usd == pytest.approx(0.010)
    assert money.levers == pytest.approx({"cascade": -0.002})
    routing = money.top_tier_cost_usd - money.cost_usd - sum(money.levers.values())
    assert routing == pytest.approx(0.025 - 0.008)


def test_ledger_of_a_cache_hit_credits_what_the_request_would_have_cost() -> None:
    # mid's answer (8000e-6), whatever was spent when it was bought (a draft included)
    money = cache_spend(MID, USAGE, TIERS[-1])
    assert (money.cost_usd, money.top_tier_cost_usd) == (0.0, pytest.approx(0.025))
    assert money.levers == pytest.approx({"cache": 0.008})
    # 200 tokens trimmed before the lookup: split as an upstream answer's ledger would be
    trimmed = cache_spend(MID, USAGE, TIERS[-1], trimmed=200)
    assert trimmed.top_tier_cost_usd == pytest.approx(0.027)
    assert trimmed.levers == pytest.approx({"cache": 0.008, "trim": 0.0008})
    routing = trimmed.top_tier_cost_usd - sum(trimmed.levers.values())
    assert routing == pytest.approx(0.027 - MID.cost(1200, 500))  # big against mid, untrimmed


def test_a_draft_fails_over_only_below_the_routed_tier() -> None:
    names = ("small", "mid", "big")
    assert draft_allowed(TIERS, "big", names) == ("small", "mid")
    assert draft_allowed(TIERS, "mid", names) == ("small",)
    assert draft_allowed(TIERS, "big", ("small", "big")) == ("small",)
    assert draft_allowed(TIERS, "small", names) == ()


def test_a_length_stop_the_client_asked_for_is_no_reason_to_escalate() -> None:
    assert answer_problem(answer(finish="length"), -1.0, limited=True) is None
    assert answer_problem(answer(finish="content_filter"), -1.0, limited=True) == "truncated"
    assert answer_problem(answer(text="", finish="length"), -1.0, limited=True) == "empty"
    assert client_limited({"max_tokens": 7}) and client_limited({"max_completion_tokens": 7})
    assert not client_limited({"max_tokens": None}) and not client_limited({})
