"""``service.gateway.upstream.refusals``: what a client sees of an upstream's 4xx."""

from __future__ import annotations

import json

from service.gateway.upstream.refusals import mask_credentials, sealed_refusal

KEY = "sk-live-ABCDEF123456"


def test_credentials_are_masked() -> None:
    text = (f"bad key Bearer {KEY}; api_key={KEY}x other sk-proj-zzzzzzzz "
            '{"authorization": "Basic dXNlcjpwYXNz"} token: abc123')
    masked = mask_credentials(text, KEY)
    for secret in (KEY, "sk-proj-zzzzzzzz", "dXNlcjpwYXNz", "abc123"):
        assert secret not in masked


def test_auth_refusal_is_a_502_without_the_body() -> None:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}).encode()
    status, doc = sealed_refusal("weak", 401, body, KEY)
    assert status == 502 and doc["error"]["code"] == "upstream_error"
    assert doc["error"]["upstream_status"] == 401 and "Incorrect" not in json.dumps(doc)


def test_parameter_refusal_keeps_a_sanitised_reason() -> None:
    body = json.dumps({"error": {"message": "x" * 1000 + KEY, "param": "top_p"}}).encode()
    status, doc = sealed_refusal("weak", 400, body, KEY)
    assert status == 400 and doc["error"]["param"] == "top_p"
    assert KEY not in json.dumps(doc) and len(doc["error"]["message"]) < 400
    status, doc = sealed_refusal("weak", 422, b"<html>not json</html>", None)
    assert status == 400 and "no reason given" in doc["error"]["message"]
