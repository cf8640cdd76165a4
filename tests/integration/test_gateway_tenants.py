"""One client key is one tenant however its ``Authorization`` header spells the bearer scheme:
the key the gateway checks (scheme case-insensitive, spaces around the key ignored) is the key
its feedback, batch jobs and cache entries belong to."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
from batch_support import (  # noqa: F401  (fixtures)
    batch_upstreams_fixture,
    make_batch_gateway_fixture,
)
from gateway_support import (  # noqa: F401  (fixtures)
    CLIENT_KEY,
    EASY,
    HARD,
    STRONG,
    WEAK,
    Gateway,
    Upstreams,
    make_gateway_fixture,
    upstreams_fixture,
)

from service.gateway.tenants import tenant_of

CANONICAL = {"authorization": f"Bearer {CLIENT_KEY}"}
SPELLINGS = [{"authorization": f"bearer {CLIENT_KEY}"},
             {"authorization": f"BEARER   {CLIENT_KEY}"}]


def chat(gw: Gateway, headers: dict[str, str], model: str = WEAK, text: str = EASY,
         **extra: Any) -> httpx.Response:
    with httpx.Client(base_url=gw.url, timeout=20) as http:
        return http.post("/v1/chat/completions", headers=headers, json={
            "model": model, "messages": [{"role": "user", "content": text}], **extra})


def test_the_tenant_is_the_checked_key_and_old_hashes_still_match() -> None:
    # records, jobs and cache entries written before hashed the raw canonical header
    before = hashlib.sha256(f"Bearer {CLIENT_KEY}".encode()).hexdigest()
    assert tenant_of(CANONICAL) == before
    assert all(tenant_of(h) == before for h in SPELLINGS)
    assert tenant_of({"authorization": "Bearer other"}) != before
    assert tenant_of({}) == hashlib.sha256(b"").hexdigest()  # no key at all: as before


def test_feedback_and_cache_follow_the_key_not_its_spelling(
    make_gateway: Any, upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw: Gateway = make_gateway(fast_bundle, cache={"enabled": True})
    first = chat(gw, CANONICAL)
    assert first.status_code == 200 and first.json()["tierwise"]["cache"] is None
    decision = first.headers["x-tierwise-decision-id"]
    for i, headers in enumerate(SPELLINGS):
        again = chat(gw, headers)
        assert again.json()["tierwise"]["cache"] == "exact"
        with httpx.Client(base_url=gw.url, timeout=20) as http:
            label = http.post("/v1/feedback", headers=headers,
                              # at least 0.5: lower feedback would evict the cached answer
                              json={"decision_id": decision, "score": 0.5 + i / 4})
        assert label.status_code == 200, label.text
    assert len(upstreams.weak.requests) == 1


def test_a_batch_job_is_fetched_with_any_spelling_of_its_key(
    make_batch_gateway: Any
) -> None:
    gw: Gateway = make_batch_gateway({"window_s": 0.05})
    queued = chat(gw, SPELLINGS[0], model=STRONG, text=HARD, tierwise={"urgent": False})
    assert queued.status_code == 202, queued.text
    job = queued.json()["id"]
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=gw.url, timeout=20) as http:
        while True:
            found = http.get(f"/v1/tierwise/jobs/{job}", headers=CANONICAL)
            assert found.status_code == 200, found.text
            if found.json()["status"] in ("completed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert found.json()["status"] == "completed"
        other = http.get(f"/v1/tierwise/jobs/{job}",
                         headers={"authorization": "Bearer tw-client-key-2"})
        assert other.status_code == 404
