"""Abuse: what a hostile client or a leaky upstream could get through the gateway, and what the
gateway refuses (issue 21): upstream error bodies, OpenAI parameters out of range, unknown
members that must not be forwarded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import UPSTREAM_KEY, Upstreams

CHAT = {"model": "weak", "messages": [{"role": "user", "content": "hi"}]}


def _post(gw: Any, body: dict[str, Any] | bytes) -> httpx.Response:
    with gw.http() as http:
        if isinstance(body, bytes):
            return http.post("/v1/chat/completions", content=body,
                             headers={"content-type": "application/json"})
        return http.post("/v1/chat/completions", json=body)


@pytest.mark.reliability(
    scenario="Upstream error bodies that echo the upstream key",
    action="the weak upstream answers 401 'bad key Bearer sk-...' (echoing the gateway's key), "
           "then 400 whose message echoes it; plain and streamed requests for the weak tier",
    expected="the client never sees the provider's body or key: a 401 becomes the gateway's "
             "502 upstream_error (upstream_status 401), a 400 a 400 upstream_error with the "
             "reason masked; the log has the body with the key masked")
def test_upstream_error_bodies_are_sealed(
    make_gateway: Any, fast_bundle: Path, upstreams: Upstreams, observed: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = make_gateway(fast_bundle)
    seen = []
    try:
        for mode, status in (("bad_key", 502), ("leaky_400", 400)):
            upstreams.weak.mode = mode
            for stream in (False, True):
                r = _post(gw, {**CHAT, "stream": stream})
                assert r.status_code == status, r.text
                error = r.json()["error"]
                assert error["code"] == "upstream_error"
                assert UPSTREAM_KEY not in r.text and "SECRET" not in r.text
                assert error["upstream_status"] in (400, 401)
                seen.append(f"{error['upstream_status']}->{r.status_code}")
        assert "temperature too high" in error["message"] and error["param"] == "temperature"
    finally:
        upstreams.reset()
    assert UPSTREAM_KEY not in caplog.text
    assert "bad key Bearer [masked]" in caplog.text
    observed(f"client statuses {seen}; no part of the key in any answer; upstream body logged "
             "with the key masked")
