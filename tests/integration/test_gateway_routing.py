"""The gateway through the official OpenAI SDK: routing, pass-through, knob, streaming, records."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    CLIENT_KEY,
    EASY,
    HARD,
    STRONG,
    UPSTREAM_KEY,
    WEAK,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)

from router_model.artifact import read_bundle
from router_model.features import featurize
from router_model.policy import Policy
from router_model.records import TrafficRecord
from router_model.router import ComplexityRouter
from service.gateway.decisions.local import load_recording_router


def chat(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def ask(gw: Gateway, text: str = HARD, **kwargs: Any) -> Any:
    """One completion with its raw response (headers) and parsed body."""
    raw = gw.client().chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "tierwise-auto"), messages=chat(text), **kwargs
    )
    return raw, raw.parse()


def rows(gw: Gateway) -> list[dict[str, Any]]:
    url = gw.config.traffic.url.removeprefix("sqlite:///")
    with sqlite3.connect(url) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM traffic ORDER BY created_at")]


@pytest.mark.parametrize("quality", [0.0, 0.3, 0.7, 1.0])
def test_auto_picks_the_routers_tier(make_gateway: Any, fast_bundle: Path, quality: float) -> None:
    gw = make_gateway(fast_bundle)
    router = ComplexityRouter.from_artifact(fast_bundle)
    for text in (HARD, EASY):
        want = router.route(text, policy=Policy(quality=quality))
        raw, body = ask(gw, text, extra_body={"tierwise": {"quality": quality}})
        assert raw.headers["x-tierwise-tier"] == want.tier
        assert body.model == want.model  # the real model answered, not "tierwise-auto"
        info = body.model_extra["tierwise"]
        assert info["tier"] == info["decided_tier"] == want.tier
        assert info["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
        assert info["quality"] == quality and info["source"] == "router"
    if quality == 0.0:
        assert all(r["tier"] == "weak" for r in rows(gw))
    if quality == 1.0:
        assert all(r["tier"] == "strong" for r in rows(gw))


def test_knob_by_header_and_body_wins(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    raw, _ = ask(gw, EASY, extra_headers={"x-tierwise-quality": "1.0"})
    assert raw.headers["x-tierwise-tier"] == "strong"
    raw, _ = ask(gw, EASY, extra_headers={"x-tierwise-quality": "0"})
    assert raw.headers["x-tierwise-tier"] == "weak"
    raw, body = ask(gw, EASY, extra_headers={"x-tierwise-quality": "0"},
                    extra_body={"tierwise": {"quality": 1.0}})
    assert raw.headers["x-tierwise-tier"] == "strong"
    raw, _ = ask(gw, HARD, extra_body={"tierwise": {"quality": 1.0, "max_tier": "weak"}})
    assert raw.headers["x-tierwise-tier"] == "weak"
    default = read_bundle(fast_bundle)[0].threshold
    assert ask(gw, EASY)[1].model_extra["tierwise"]["quality"] == default


def test_passthrough_by_model_or_tier_name(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)
    for name, tier, model in ((STRONG, "strong", STRONG), ("weak", "weak", WEAK)):
        raw, body = ask(gw, HARD, model=name, extra_body={"tierwise": {"quality": 0.0}})
        assert raw.headers["x-tierwise-tier"] == tier and body.model == model
        assert body.model_extra["tierwise"]["source"] == "passthrough"
        assert raw.headers["x-tierwise-arm"] == "passthrough"
    forwarded = upstreams.strong.requests[-1]
    assert forwarded == {"model": STRONG, "messages": chat(HARD)}  # tierwise member stripped
    assert upstreams.strong.headers[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    record = rows(gw)[0]
    assert (record["source"], record["propensity"], record["router_tier"]) == ("passthrough", 1, "")


def test_only_model_is_rewritten(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)
    extra = {"temperature": 0.3, "max_tokens": 17, "seed": 5, "tools": [], "metadata": {"a": "b"}}
    ask(gw, EASY, extra_body={"tierwise": {"quality": 0.0}, **extra})
    sent = upstreams.weak.requests[-1]
    assert sent == {"model": WEAK, "messages": chat(EASY), **extra}


def test_models_list(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    ids = [m.id for m in gw.client().models.list()]
    assert ids == ["tierwise-auto", WEAK, STRONG]


def test_usage_cost_and_savings(make_gateway: Any, fast_bundle: Path, upstreams: Upstreams) -> None:
    gw = make_gateway(fast_bundle)
    _, body = ask(gw, EASY, extra_body={"tierwise": {"quality": 0.0}})
    info = body.model_extra["tierwise"]
    assert (body.usage.prompt_tokens, body.usage.completion_tokens) == (11, 7)
    assert info["cost_usd"] == pytest.approx((11 * 0.6 + 7 * 0.6) / 1e6)
    assert info["top_tier_cost_usd"] == pytest.approx((11 * 10 + 7 * 30) / 1e6)
    assert info["savings_usd"] == pytest.approx(info["top_tier_cost_usd"] - info["cost_usd"])
    upstreams.weak.send_usage = False  # counted with the router's tokenizer instead
    _, body = ask(gw, EASY, extra_body={"tierwise": {"quality": 0.0}})
    info = body.model_extra["tierwise"]
    assert info["usage_source"] == "estimated" and info["input_tokens"] == 1
    assert info["output_tokens"] > 3
    with gw.http("tw-admin-key") as http:
        report = http.get("/v1/admin/savings").json()
    assert report["total"]["requests"] == 2
    assert report["by_tier"]["weak"]["savings_usd"] > 0 and report["savings_pct"] > 90
    with gw.http(CLIENT_KEY) as http:
        assert http.get("/v1/admin/savings").status_code == 401
        assert "tierwise_gateway_savings_usd_total" in http.get("/metrics").text


def test_streaming_sdk(make_gateway: Any, fast_bundle: Path, upstreams: Upstreams) -> None:
    gw = make_gateway(fast_bundle)
    stream = gw.client().chat.completions.create(
        model="tierwise-auto", messages=chat(EASY), stream=True,
        stream_options={"include_usage": True}, extra_body={"tierwise": {"quality": 0.0}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is forty-two."
    first, last = chunks[0].model_extra["tierwise"], chunks[-1].model_extra["tierwise"]
    assert first["tier"] == "weak" and chunks[0].model == WEAK
    assert last["decision_id"] == first["decision_id"] and last["output_tokens"] == 7
    assert chunks[-1].usage is not None and last["cost_usd"] > 0
    assert all("tierwise" not in c.model_extra for c in chunks[1:-1])  # the rest: as sent
    record = rows(gw)[-1]
    assert record["stream"] == 1 and record["usage_source"] == "upstream"
    assert record["decision_id"] == first["decision_id"]


def test_streaming_raw_bytes_and_estimated_usage(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    body = {"model": "weak", "messages": chat(EASY), "stream": True}
    with gw.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-tierwise-tier"] == "weak"
        events = [e for e in response.read().split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    docs = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert docs[0]["tierwise"]["decision_id"] == response.headers["x-tierwise-decision-id"]
    assert all("tierwise" not in d for d in docs[1:])
    record = rows(gw)[-1]
    assert record["usage_source"] == "estimated" and record["output_tokens"] > 3


def test_traffic_record_fields(make_gateway: Any, full_bundle: Path) -> None:
    gw = make_gateway(full_bundle)
    raw, _ = ask(gw, HARD, extra_body={"tierwise": {"quality": 0.5}})
    record = rows(gw)[-1]
    manifest = read_bundle(full_bundle)[0]
    router = ComplexityRouter.from_artifact(full_bundle)
    vector = TrafficRecord.features_from_blob(record["features"])
    want = featurize([HARD], router.featurizer).matrix[0]
    assert len(vector) == len(manifest.feature_names) == len(want)
    assert vector == pytest.approx([float(x) for x in want], abs=1e-6)
    proba = router.proba_from_features(np.asarray([vector], dtype=np.float32))[0]
    assert json.loads(record["probabilities"]) == pytest.approx(
        dict(zip(["weak", "strong"], proba.tolist(), strict=True)), abs=1e-6)
    assert record["decision_id"] == raw.headers["x-tierwise-decision-id"]
    assert (record["arm"], record["propensity"], record["source"]) == ("router", 1.0, "router")
    assert record["feature_version"] == manifest.feature_version
    assert record["model_version"] == manifest.model_version
    assert record["prompt"] is None and len(record["prompt_sha256"]) == 12
    assert record["latency_ms"] > 0 and record["router_latency_ms"] > 0
    assert record["status"] == 200 and record["failovers"] == 0


def test_prompts_stored_only_when_allowed(
    make_gateway: Any, fast_bundle: Path, tmp_path: Path
) -> None:
    gw = make_gateway(fast_bundle, traffic={"url": f"sqlite:///{tmp_path / 'p.db'}",
                                            "store_prompts": True})
    ask(gw, HARD)
    assert rows(gw)[-1]["prompt"] == HARD


def test_feedback(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    raw, _ = ask(gw, EASY)
    decision = raw.headers["x-tierwise-decision-id"]
    with gw.http() as http:
        ok = http.post("/v1/feedback", json={"decision_id": decision, "thumbs": "up"})
        assert ok.status_code == 200 and ok.json()["value"] == 1.0
        assert http.post("/v1/feedback", json={"decision_id": decision, "score": 0.25}).is_success
        missing = http.post("/v1/feedback", json={"decision_id": "nope", "score": 0.5})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        for bad in ({"decision_id": decision, "score": 1.5}, {"decision_id": decision},
                    {"decision_id": decision, "score": 0.5, "thumbs": "up"},
                    {"decision_id": decision, "thumbs": "sideways"}):
            response = http.post("/v1/feedback", json=bad)
            assert response.status_code == 400, bad
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert http.post("/v1/feedback", json={"decision_id": decision, "score": 1},
                         headers={"authorization": "Bearer wrong"}).status_code == 401
    url = gw.config.traffic.url.removeprefix("sqlite:///")
    with sqlite3.connect(url) as conn:
        got = conn.execute("SELECT value FROM feedback WHERE decision_id = ? ORDER BY id",
                           (decision,)).fetchall()
    assert got == [(1.0,), (0.25,)]


def test_auth(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    for key in ("wrong", "", CLIENT_KEY + "x"):
        with pytest.raises(openai.AuthenticationError) as err:
            gw.client(key or "-").chat.completions.create(model="tierwise-auto",
                                                          messages=chat(EASY))
        assert err.value.code == "invalid_api_key"
    with gw.http(None) as http:
        response = http.post("/v1/chat/completions", json={"model": "x", "messages": []})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert http.get("/v1/models").status_code == 401
        assert http.get("/healthz").status_code == 200
    assert ask(gw, EASY)[1].choices  # the second configured key works too


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_bad_inputs_get_the_openai_envelope(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle, limits={"max_body_bytes": 4096})
    with gw.http() as http:
        post = http.post
        assert _error(post("/v1/chat/completions", content=b"{nope"), 400)["code"] == (
            "invalid_json")
        assert _error(post("/v1/chat/completions", json=[1]), 400)["code"] == "invalid_json"
        err = _error(post("/v1/chat/completions", json={"model": "tierwise-auto"}), 400)
        assert err["param"] == "messages" and err["code"] == "missing_required_parameter"
        err = _error(post("/v1/chat/completions", json={"model": 3, "messages": chat("x")}), 400)
        assert err["param"] == "model"
        err = _error(post("/v1/chat/completions",
                          json={"model": "gpt-5", "messages": chat("x")}), 404)
        assert err["code"] == "model_not_found"
        err = _error(post("/v1/chat/completions", json={
            "model": "tierwise-auto", "messages": chat("x"), "stream": "yes"}), 400)
        assert err["param"] == "stream"
        err = _error(post("/v1/chat/completions", json={
            "model": "tierwise-auto", "messages": chat("x"), "tierwise": {"quality": 2}}), 400)
        assert err["param"] == "tierwise.quality"
        err = _error(post("/v1/chat/completions", json={
            "model": "tierwise-auto", "messages": chat("x")},
            headers={"x-tierwise-quality": "high"}), 400)
        assert err["param"] == "x-tierwise-quality"
        err = _error(post("/v1/chat/completions", json={
            "model": "tierwise-auto", "messages": chat("x"), "tierwise": {"min_tier": "mid"}}),
            400)
        assert err["param"] == "tierwise.min_tier"
        err = _error(post("/v1/chat/completions", json={
            "model": "tierwise-auto", "messages": [{"role": "system", "content": "x"}]}), 400)
        assert err["param"] == "messages"
        big = {"model": "tierwise-auto", "messages": chat("x" * 5000)}
        assert _error(post("/v1/chat/completions", json=big), 413)["code"] == "prompt_too_large"
        assert _error(http.get("/v1/nothing"), 404)["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        gw.client().chat.completions.create(model="gpt-5", messages=chat("x"))
    assert rows(gw) == []  # refused requests reach no upstream and leave no record


def test_upstream_request_errors_are_the_gateways_own(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams
) -> None:
    gw = make_gateway(fast_bundle)
    upstreams.weak.mode = "bad_request"
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().chat.completions.create(model="weak", messages=chat(EASY))
    assert err.value.code == "upstream_error"
    assert "refused the request: bad" in err.value.message
    assert len(upstreams.strong.requests) == 0  # a 400 is the request's fault: no failover
    assert rows(gw)[-1]["status"] == 400


def test_no_prompt_text_or_keys_in_logs(
    make_gateway: Any, fast_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = make_gateway(fast_bundle)
    secret_prompt = "zebra-unicorn-4471 explain the Riemann hypothesis"
    ask(gw, secret_prompt)
    stream = gw.client().chat.completions.create(
        model="tierwise-auto", messages=chat(secret_prompt), stream=True)
    assert list(stream)
    with pytest.raises(openai.AuthenticationError):
        gw.client("bad-key-123").chat.completions.create(model="weak", messages=chat("x"))
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "completion " in text  # the gateway did log its requests
    for secret in ("zebra-unicorn", UPSTREAM_KEY, CLIENT_KEY, "bad-key-123", "tw-admin-key"):
        assert secret not in text


def test_recording_router_hands_out_the_scored_rows(full_bundle: Path) -> None:
    router = load_recording_router(full_bundle, 0)
    texts = [HARD, EASY, HARD + " twice"]
    router.route_batch(texts, [None] * 3)
    plain = ComplexityRouter.from_artifact(full_bundle, encoder=router.featurizer.encoder)
    want = featurize(texts, plain.featurizer).matrix  # the same batch, so the same int8 rounding
    for text, row in zip(texts, want, strict=True):
        got = router.scored_features(text)
        assert got is not None and np.array_equal(got, row)
        assert router.scored_features(text) is None  # handed out once
