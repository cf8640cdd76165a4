"""The gateway's pure parts: config, circuit breaker, failover order, A/B split, SSE, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_model.errors import InvalidData, InvalidPrompt, NotFound, PromptTooLarge, UpstreamError
from service.gateway.config import load_gateway_config, parse_gateway_config
from service.gateway.errors import BadRequest, ModelNotFound, envelope_for
from service.gateway.levers.ab import Arm, ArmAssigner
from service.gateway.requests import parse_chat, request_policy, unit_id
from service.gateway.upstream.pool import CircuitBreaker, UpstreamPool, build_upstreams
from service.gateway.upstream.sse import SseTap, with_member
from service.shared.errors import Unauthorized

REPO = Path(__file__).resolve().parents[3]


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tiers": [
            {"name": "weak", "model": "m-weak", "base_url": "http://a/v1", "api_key_env": "A",
             "input_price": 1, "output_price": 1},
            {"name": "strong", "model": "m-strong", "base_url": "http://b/v1",
             "api_key_env": "B", "input_price": 5, "output_price": 10},
        ],
        "default_tier": "weak",
    }
    base.update(changes)
    return base


def test_example_config_loads() -> None:
    config = load_gateway_config(REPO / "data" / "gateway.example.yaml")
    assert [t.name for t in config.tiers] == ["weak", "strong"]
    assert config.router.bundle == REPO / "data" / "models" / "routellm"
    assert config.traffic.url == f"sqlite:///{REPO / 'data' / 'local' / 'traffic.db'}"
    assert config.api_key_envs() == ["OPENAI_API_KEY", "TOGETHER_API_KEY"]
    assert config.ab is not None and [a.name for a in config.ab.arms] == [
        "router", "always_strong"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"default_tier": "mid"}, "default_tier 'mid' is not a tier"),
    ({"tiers": []}, "tiers: List should have at least 2 items"),
    ({"router": {"bundle": "x", "address": "h:1"}}, "either 'bundle' or 'address'"),
    ({"router": {"address": "nohost"}}, "HOST:PORT"),
    ({"traffic": {"url": "mysql://x"}}, "traffic.url"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ({"ab": {"arms": [{"name": "router", "weight": 1}, {"name": "router", "weight": 1}]}},
     "arm names must be unique"),
])
def test_config_errors_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        parse_gateway_config(doc(**changes), source="cfg.yaml")


def test_tier_errors_name_the_field() -> None:
    bad = doc()
    del bad["tiers"][0]["base_url"]
    bad["tiers"][1]["api_key_env"] = "sk-live-abcdef"  # a key pasted where its NAME belongs
    with pytest.raises(InvalidData) as err:
        parse_gateway_config(bad, source="cfg.yaml")
    text = str(err.value)
    assert "cfg.yaml: tiers.0.base_url: Field required" in text
    assert "tiers.1.api_key_env" in text and "abcdef" not in text
    cheap_last = doc()
    cheap_last["tiers"].reverse()
    with pytest.raises(InvalidData, match="ordered by price"):
        parse_gateway_config(cheap_last)


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=lambda: now[0])
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_circuit_breaker_counts_a_stream_at_its_end() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=lambda: now[0])
    for _ in range(2):  # streams that start, then break off: they add up
        assert breaker.allow()
        breaker.started()
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow() and not breaker.allow()
    breaker.started()  # a probe stream that starts answers the probe
    assert breaker.state == "closed" and breaker.allow()


def test_failover_order() -> None:
    three = doc(tiers=[
        {"name": n, "model": f"m-{n}", "base_url": "http://x/v1", "api_key_env": "K",
         "input_price": p, "output_price": p} for n, p in (("a", 1), ("b", 2), ("c", 3))
    ], default_tier="a")
    config = parse_gateway_config(three)
    pool = UpstreamPool(build_upstreams(config, {"K": "k"}), config.failover,
                        httpx.AsyncClient())
    assert [u.tier.name for u in pool.order("a")] == ["a", "b", "c"]
    assert [u.tier.name for u in pool.order("b")] == ["b", "c", "a"]
    assert [u.tier.name for u in pool.order("c")] == ["c", "b", "a"]
    assert [u.tier.name for u in pool.order("b", {"a", "b"})] == ["b", "a"]  # request's limits
    assert pool.order("a")[0].url == "http://x/v1/chat/completions"
    assert "k" not in repr(pool.order("a")[0])  # keys never printed


def test_ab_split_is_sticky_and_weighted() -> None:
    assigner = ArmAssigner([Arm("router", None, 3), Arm("fixed", "strong", 1)], salt="s")
    first = {f"u{i}": assigner.assign(f"u{i}") for i in range(4000)}
    assert all(assigner.assign(u).arm == a.arm for u, a in list(first.items())[:200])
    counts = Counter(a.arm.name for a in first.values())
    assert counts["fixed"] / 4000 == pytest.approx(0.25, abs=0.03)
    assert {a.propensity for a in first.values()} == {0.75, 0.25}
    other_salt = ArmAssigner([Arm("router", None, 3), Arm("fixed", "strong", 1)], salt="t")
    assert any(other_salt.assign(u).arm != a.arm for u, a in first.items())
    anonymous = Counter(assigner.assign(None).arm.name for _ in range(4000))
    assert anonymous["fixed"] / 4000 == pytest.approx(0.25, abs=0.03)
    single = ArmAssigner.single_router().assign("x")
    assert (single.arm.name, single.propensity) == ("router", 1.0)


def test_sse_tap_splits_events_across_chunks() -> None:
    events = [
        b'data: {"id":"c1","model":"m","choices":[{"delta":{"content":"Hel"}}]}\n\n',
        b'data: {"id":"c1","choices":[{"delta":{"content":"lo"}}]}\r\n\r\n',
        b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
        b": keep-alive comment\n\n",
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(events)
    tap, out = SseTap(), []
    for i in range(0, len(stream), 7):  # chunk boundaries anywhere
        out += tap.feed(stream[i : i + 7])
    assert out == events and tap.rest() == b""
    flags = [tap.inspect(e) for e in out]
    assert flags == [(False, False), (False, False), (False, True), (False, False), (True, False)]
    assert "".join(tap.text) == "Hello" and tap.usage == {"prompt_tokens": 3,
                                                          "completion_tokens": 2}
    tagged = with_member(events[0], "tierwise", {"tier": "weak"})
    assert json.loads(tagged.removeprefix(b"data: "))["tierwise"] == {"tier": "weak"}
    assert with_member(events[-1], "tierwise", {}) == events[-1]


@pytest.mark.parametrize(("exc", "status", "kind", "code"), [
    (BadRequest("x", param="model", code="invalid_value"), 400, "invalid_request_error",
     "invalid_value"),
    (InvalidPrompt("no tier left"), 400, "invalid_request_error", "invalid_prompt"),
    (PromptTooLarge("big"), 413, "invalid_request_error", "prompt_too_large"),
    (ModelNotFound("gpt-9"), 404, "invalid_request_error", "model_not_found"),
    (NotFound("id"), 404, "invalid_request_error", "not_found"),
    (Unauthorized("key"), 401, "authentication_error", "invalid_api_key"),
    (UpstreamError("all failed"), 502, "api_error", "upstream_error"),
    (RuntimeError("secret internals"), 500, "api_error", "internal_error"),
])
def test_openai_envelope(exc: Exception, status: int, kind: str, code: str) -> None:
    got, body = envelope_for(exc)
    assert got == status
    assert body["error"]["type"] == kind and body["error"]["code"] == code
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "secret" not in body["error"]["message"]


def test_request_parsing() -> None:
    body, raw = parse_chat(json.dumps({
        "model": "tierwise-auto", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2, "tierwise": {"quality": 0.9}, "user": "u1",
    }).encode())
    assert raw["temperature"] == 0.2 and body.tierwise is not None
    policy = request_policy(body, {"x-tierwise-quality": "0.1"}, ["weak", "strong"], None)
    assert policy.quality == 0.9  # the body wins over the header
    assert unit_id(body, {"x-session-id": "s"}) == "u1"
    body, _ = parse_chat(b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}')
    assert request_policy(body, {"x-tierwise-quality": "0.1"}, ["weak"], 0.5).quality == 0.1
    assert request_policy(body, {}, ["weak"], 0.5).quality == 0.5
    assert unit_id(body, {"x-session-id": "s"}) == "s" and unit_id(body, {}) is None
    for bad, param in [(b"[]", None), (b'{"model": "m"}', "messages"),
                       (b'{"model": "m", "messages": [{"role": 1}]}', "messages.0.role"),
                       (b'{"model": "m", "messages": [], "stream": 1}', "messages")]:
        with pytest.raises(BadRequest) as err:
            parse_chat(bad)
        assert err.value.param == param
    for header in ("nan", "-0.1", "1.5", "inf", "x"):
        with pytest.raises(BadRequest):
            request_policy(body, {"x-tierwise-quality": header}, ["weak"], None)


@pytest.mark.parametrize(("doc", "param"), [
    ({"messages": [{"role": "user", "content": "a\ud800"}]}, "messages.0.content"),
    ({"messages": [], "metadata": {"deep": [[{"x": "\udfff"}]]}}, "metadata.deep.0.0.x"),
    ({"messages": [], "tools": {"k\udc00": 1}}, "tools.k?"),
])
def test_unpaired_surrogates_are_refused_where_they_are(doc: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest, match="unpaired UTF-16 surrogate") as err:
        parse_chat(json.dumps({"model": "m", **doc}).encode())
    assert err.value.param == param
    body, _ = parse_chat(json.dumps({"model": "m", "messages": [
        {"role": "user", "content": "pair \U0001f600"}]}).encode())
    assert body.messages[0].content == "pair \U0001f600"
