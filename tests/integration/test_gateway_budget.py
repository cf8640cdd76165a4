"""The gateway's budget knob (``budget.top_share``) on real traffic through a real gateway."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    Gateway,
    make_gateway_fixture,
    postgres_url_fixture,
    upstreams_fixture,
)

from router_model.policy import choose_tiers, knob_for_top_share
from router_model.router import ComplexityRouter

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"
SHARE = 0.25
WINDOW = 30


def prompts() -> list[str]:
    lines = (FIXTURES / "routellm_small.jsonl").read_text().splitlines()
    return [json.loads(line)["prompt"] for line in lines]


def ask(gw: Gateway, text: str, **tierwise: Any) -> dict[str, Any]:
    with gw.http() as http:
        body: dict[str, Any] = {"model": "tierwise-auto",
                                "messages": [{"role": "user", "content": text}]}
        if tierwise:
            body["tierwise"] = tierwise
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    info: dict[str, Any] = r.json()["tierwise"]
    return info


def gauge(gw: Gateway, name: str) -> float:
    with gw.http(None) as http:
        text = http.get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not exported"
    return float(found.group(1))


def budget_doc() -> dict[str, Any]:
    return {"budget": {"top_share": SHARE, "window": WINDOW, "min_samples": WINDOW}}


def test_the_budget_sets_the_knob_from_the_routed_traffic(
    make_gateway: Any, fast_bundle: Path
) -> None:
    router = ComplexityRouter.from_artifact(fast_bundle)
    texts = prompts()
    gw = make_gateway(fast_bundle, **budget_doc())
    assert math.isnan(gauge(gw, "tierwise_gateway_budget_knob"))
    # warming up: the bundle's default knob
    for text in texts[:WINDOW]:
        assert ask(gw, text)["quality"] == pytest.approx(router.manifest.threshold)
    assert gauge(gw, "tierwise_gateway_budget_window") == WINDOW
    # the knob that sends at most SHARE of those prompts to the top tier, as tierwise knob fits it
    proba = router.predict_proba(texts[:WINDOW])
    want = min(knob_for_top_share(proba, SHARE), router.manifest.threshold)
    # the default knob sends more than SHARE of these prompts to the top tier: the budget binds
    assert (choose_tiers(proba, router.manifest.threshold) == 1).mean() > SHARE
    assert want < router.manifest.threshold
    assert gauge(gw, "tierwise_gateway_budget_knob") == pytest.approx(want, abs=1e-6)
    assert (choose_tiers(proba, want) == 1).mean() <= SHARE
    info = ask(gw, texts[WINDOW])
    assert info["quality"] == pytest.approx(want, abs=1e-6)
    decided = choose_tiers(router.predict_proba([texts[WINDOW]]), want)
    assert info["decided_tier"] == ("weak", "strong")[int(decided[0])]
    # a request's own knob wins, and its decision still joins the window
    assert ask(gw, texts[WINDOW + 1], quality=1.0)["tier"] == "strong"
    assert gauge(gw, "tierwise_gateway_budget_window") == WINDOW


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_restarted_gateway_starts_from_the_stored_decisions(
    make_gateway: Any, fast_bundle: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    router = ComplexityRouter.from_artifact(fast_bundle)
    texts = prompts()[:WINDOW]
    store: dict[str, Any] = {}
    if backend == "postgres":
        store["traffic"] = {"url": request.getfixturevalue("postgres_url")}
    first = make_gateway(fast_bundle, **budget_doc(), **store)
    for text in texts:
        ask(first, text)
    knob = gauge(first, "tierwise_gateway_budget_knob")
    # a second replica on the same traffic store: the window is full at once
    second = make_gateway(fast_bundle, **budget_doc(), **store)
    assert gauge(second, "tierwise_gateway_budget_window") == WINDOW
    assert gauge(second, "tierwise_gateway_budget_knob") == pytest.approx(knob)
    info = ask(second, "Write a haiku about the sea.")
    assert info["quality"] == pytest.approx(knob)
    decided = choose_tiers(router.predict_proba(["Write a haiku about the sea."]), knob)
    assert info["decided_tier"] == ("weak", "strong")[int(decided[0])]


def test_without_a_budget_nothing_changes(make_gateway: Any, fast_bundle: Path) -> None:
    router = ComplexityRouter.from_artifact(fast_bundle)
    gw = make_gateway(fast_bundle)
    for text in prompts()[:5]:
        assert ask(gw, text)["quality"] == pytest.approx(router.manifest.threshold)
    with gw.http(None) as http:
        assert "tierwise_gateway_budget_knob" not in http.get("/metrics").text


def test_the_budget_never_raises_the_knob(make_gateway: Any, fast_bundle: Path) -> None:
    """A budget above what the default knob sends leaves the default: it is a ceiling."""
    router = ComplexityRouter.from_artifact(fast_bundle)
    gw = make_gateway(fast_bundle, budget={"top_share": 1.0, "window": 10, "min_samples": 10})
    texts = prompts()
    for text in texts[:10]:
        ask(gw, text)
    assert gauge(gw, "tierwise_gateway_budget_knob") == pytest.approx(router.manifest.threshold)
    assert ask(gw, texts[10])["quality"] == pytest.approx(router.manifest.threshold)
