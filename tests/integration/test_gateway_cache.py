"""The gateway's response cache and prompt trimming, against fake upstreams that count calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    HARD,
    STRONG,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)

#: HARD reworded: the same question (cosine ~0.997 under the router's MiniLM encoder).
PARAPHRASE = "Prove there are infinitely many primes and then derive the prime number theorem."
#: A different question on the same topic (cosine ~0.72): must never be served HARD's answer.
OTHER = "Prove that there are infinitely many twin primes."


def ask(gw: Gateway, text: str, key: str | None = None, **extra: Any) -> dict[str, Any]:
    """One non-streaming completion on the strong tier (pass-through: the tier is fixed)."""
    client = gw.client(key) if key else gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model=STRONG, messages=[{"role": "user", "content": text}], **extra
    )
    body: dict[str, Any] = raw.parse().model_dump()
    body["headers"] = dict(raw.headers)
    return body


def cached(make_gateway: Any, bundle: Path, **cache: Any) -> Gateway:
    gw: Gateway = make_gateway(bundle, cache={"enabled": True, **cache})
    return gw


def metric(gw: Gateway, line: str) -> float:
    with gw.http(None) as http:
        text = http.get("/metrics").text
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_exact_hit_skips_the_upstream(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw = cached(make_gateway, fast_bundle)
    first = ask(gw, HARD)
    again = ask(gw, "\n" + HARD + "  \r\n")  # same text, meaningless whitespace around it
    assert len(upstreams.strong.requests) == 1
    assert first["tierwise"]["cache"] is None
    assert again["tierwise"]["cache"] == "exact"
    assert again["headers"]["x-tierwise-cache"] == "exact"
    # the response says what the traffic record says: answered from the cache, by that model
    assert again["tierwise"]["source"] == again["headers"]["x-tierwise-source"] == "cache"
    assert again["tierwise"]["model"] == again["headers"]["x-tierwise-model"] == STRONG
    assert first["headers"]["x-tierwise-source"] == "passthrough"
    assert again["id"] != first["id"]
    assert again["choices"] == first["choices"]
    assert again["tierwise"]["cost_usd"] == 0.0
    assert again["tierwise"]["saved_usd"] == pytest.approx(first["tierwise"]["cost_usd"])
    assert metric(gw, 'tierwise_gateway_cache_lookups_total{result="exact"}') == 1.0
    assert metric(gw, 'tierwise_gateway_cache_lookups_total{result="miss"}') == 1.0
    assert metric(gw, "tierwise_gateway_cache_saved_usd_total") == pytest.approx(
        first["tierwise"]["cost_usd"])


def test_other_parameters_or_tenant_miss(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw = cached(make_gateway, fast_bundle)
    ask(gw, HARD)
    other_tenant = ask(gw, HARD, key="tw-client-key-2")
    other_params = ask(gw, HARD, temperature=0.2)
    assert other_tenant["tierwise"]["cache"] is None
    assert other_params["tierwise"]["cache"] is None
    assert len(upstreams.strong.requests) == 3


@pytest.mark.parametrize("bundle", ["fast_bundle", "full_bundle"])
def test_code_that_differs_only_in_indentation_is_another_question(
    make_gateway: Any, upstreams: Upstreams, bundle: str, request: pytest.FixtureRequest
) -> None:
    gw = cached(make_gateway, request.getfixturevalue(bundle), semantic=True)
    loop = "What does this Python print?\n\nx = 0\nfor i in range(3):\n    x += 1\n"
    upstreams.strong.content = "1\n2\n3"
    inside = ask(gw, loop + "    print(x)\n")
    upstreams.strong.content = "3"
    after = ask(gw, loop + "print(x)\n")
    assert inside["choices"][0]["message"]["content"] == "1\n2\n3"
    assert after["tierwise"]["cache"] is None
    assert after["choices"][0]["message"]["content"] == "3"
    assert len(upstreams.strong.requests) == 2


def test_a_cascade_draft_is_cached_as_the_draft_tiers_answer(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw: Gateway = make_gateway(fast_bundle, cache={"enabled": True}, cascade={"min_prior": 0.0})
    upstreams.weak.content, upstreams.strong.content = "weak answer", "strong answer"

    def auto(**knob: Any) -> dict[str, Any]:
        with gw.http() as http:
            response = http.post("/v1/chat/completions", json={
                "model": "tierwise-auto", "messages": [{"role": "user", "content": HARD}],
                "tierwise": knob})
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        return doc

    drafted = auto(quality=1.0, cascade=True)["tierwise"]  # decided strong, the weak draft kept
    assert (drafted["decided_tier"], drafted["tier"]) == ("strong", "weak")
    # a request that refused the cascade is answered by strong, never by the weak draft
    plain = auto(quality=1.0, cascade=False)
    assert plain["tierwise"]["cache"] is None and plain["tierwise"]["tier"] == "strong"
    assert plain["choices"][0]["message"]["content"] == "strong answer"
    assert (len(upstreams.weak.requests), len(upstreams.strong.requests)) == (1, 1)
    # each answer is served to requests decided for the tier that gave it
    weak = auto(quality=0.0)
    assert (weak["tierwise"]["cache"], weak["tierwise"]["tier"]) == ("exact", "weak")
    assert weak["choices"][0]["message"]["content"] == "weak answer"
    strong = auto(quality=1.0, cascade=True)
    assert (strong["tierwise"]["cache"], strong["tierwise"]["tier"]) == ("exact", "strong")
    assert strong["choices"][0]["message"]["content"] == "strong answer"
    assert (len(upstreams.weak.requests), len(upstreams.strong.requests)) == (1, 1)


def test_entries_expire(make_gateway: Any, upstreams: Upstreams, fast_bundle: Path) -> None:
    gw = cached(make_gateway, fast_bundle, ttl_s=0.3)
    ask(gw, HARD)
    assert ask(gw, HARD)["tierwise"]["cache"] == "exact"
    time.sleep(0.4)
    assert ask(gw, HARD)["tierwise"]["cache"] is None
    assert len(upstreams.strong.requests) == 2


def test_paraphrase_hits_with_the_encoder(
    make_gateway: Any, upstreams: Upstreams, full_bundle: Path
) -> None:
    gw = cached(make_gateway, full_bundle, semantic=True)
    first = ask(gw, HARD)
    para = ask(gw, PARAPHRASE)
    assert para["tierwise"]["cache"] == "semantic"
    assert para["tierwise"]["similarity"] >= 0.95
    assert para["choices"] == first["choices"]
    assert ask(gw, OTHER)["tierwise"]["cache"] is None
    assert ask(gw, PARAPHRASE, key="tw-client-key-2")["tierwise"]["cache"] is None
    assert len(upstreams.strong.requests) == 3


def test_semantic_layer_is_opt_in(
    make_gateway: Any, upstreams: Upstreams, full_bundle: Path
) -> None:
    gw = cached(make_gateway, full_bundle)  # the encoder is there, the layer is not on
    ask(gw, HARD)
    assert ask(gw, PARAPHRASE)["tierwise"]["cache"] is None
    assert len(upstreams.strong.requests) == 2


def test_hand_bundle_has_only_the_exact_layer(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw = cached(make_gateway, fast_bundle, semantic=True)
    ask(gw, HARD)
    assert ask(gw, PARAPHRASE)["tierwise"]["cache"] is None
    assert len(upstreams.strong.requests) == 2


def test_cache_is_off_by_default(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw: Gateway = make_gateway(fast_bundle)
    ask(gw, HARD)
    assert ask(gw, HARD)["tierwise"]["cache"] is None
    assert len(upstreams.strong.requests) == 2


def test_trim_on_request_drops_repeated_context(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw: Gateway = make_gateway(fast_bundle)
    system = {"role": "system", "content": "You are a careful mathematician. Show every step."}
    messages = [system, {"role": "user", "content": "What is a prime?"},
                {"role": "assistant", "content": "A number with exactly two divisors."},
                system, {"role": "user", "content": HARD}]
    raw = gw.client().chat.completions.with_raw_response.create(
        model=STRONG, messages=messages,  # type: ignore[arg-type]
        extra_body={"tierwise": {"trim": True}},
    )
    body = raw.parse().model_dump()
    forwarded = upstreams.strong.requests[-1]["messages"]
    assert forwarded == [messages[0], messages[1], messages[2], messages[4]]
    assert body["tierwise"]["trimmed_tokens"] > 0
    untrimmed = ask(gw, HARD)
    assert untrimmed["tierwise"]["trimmed_tokens"] == 0
