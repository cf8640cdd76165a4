"""The batch window's parts: the non-urgent marker, the job document, config, the job store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from router_model.errors import InvalidData
from service.gateway.batch.jobs import Job, open_job_store
from service.gateway.batch.window import job_document, non_urgent
from service.gateway.config import TierConfig, parse_gateway_config
from service.gateway.errors import BadRequest
from service.gateway.requests import ChatBody


def body(**tierwise: Any) -> ChatBody:
    doc: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if tierwise:
        doc["tierwise"] = tierwise
    return ChatBody.model_validate(doc)


def test_the_marker_comes_from_the_body_then_the_header() -> None:
    assert not non_urgent(body(), {})
    assert non_urgent(body(urgent=False), {})
    assert not non_urgent(body(urgent=True), {"x-tierwise-urgent": "false"})  # the body wins
    assert non_urgent(body(), {"x-tierwise-urgent": " False "})
    assert not non_urgent(body(), {"x-tierwise-urgent": "1"})
    with pytest.raises(BadRequest) as err:
        non_urgent(body(), {"x-tierwise-urgent": "tomorrow"})
    assert err.value.param == "x-tierwise-urgent"


def tier(**changes: Any) -> dict[str, Any]:
    doc = {"name": "t", "model": "m", "base_url": "http://x/v1", "api_key_env": "K",
           "input_price": 1.0, "output_price": 2.0}
    return {**doc, **changes}


def test_batch_config_is_validated() -> None:
    doc = {"tiers": [tier(name="a", model="a"), tier(name="b", model="b", batch_discount=0.5)],
           "default_tier": "a", "batch": {"enabled": True, "window_s": 5}}
    config = parse_gateway_config(doc)
    assert config.batch.enabled and config.batch.window_s == 5
    assert [t.batch_discount for t in config.tiers] == [None, 0.5]
    for bad in ({"batch": {"window_s": 0}}, {"batch": {"max_requests": 50_001}},
                {"batch": {"later": True}}, {"batch": {"lease_s": 0.5}},
                {"batch": {"upload_timeout_s": 0}}):
        with pytest.raises(InvalidData, match="batch"):
            parse_gateway_config({**doc, **bad})
    with pytest.raises(InvalidData, match="batch_discount"):
        parse_gateway_config({**doc, "tiers": [tier(name="a", model="a"),
                                               tier(name="b", model="b", batch_discount=1.0)]})


def job(i: int, tier_name: str = "strong", created: float = 100.0) -> Job:
    return Job(id=f"tw-job-{i}", tenant="t1", tier=tier_name, status="queued",
               created_at=created + i, request={"messages": [{"role": "user", "content": "x"}]},
               draft={"decision_id": f"d{i}"})


def test_job_document_hides_the_claim_and_shows_the_error() -> None:
    t = TierConfig.model_validate(tier(batch_discount=0.5))
    claimed = replace(job(1), status="claimed")
    doc = job_document(claimed, t)
    assert doc["status"] == "queued" and doc["response"] is None and doc["error"] is None
    failed = replace(job(1), status="failed", error="boom")
    assert job_document(failed, t)["error"]["message"] == "boom"


def test_sqlite_job_store_claims_each_job_once(tmp_path: Path) -> None:
    async def run() -> None:
        store = open_job_store(f"sqlite:///{tmp_path / 'jobs.db'}")
        await store.start()
        try:
            for i in range(5):
                await store.add(job(i))
            await store.add(job(9, tier_name="weak"))
            assert await store.queued("strong") == (5, 100.0)
            first = await store.claim("strong", 3, "c1", until=1000.0)
            second = await store.claim("strong", 3, "c2", until=1000.0)
            assert [j.id for j in first] == ["tw-job-0", "tw-job-1", "tw-job-2"]
            assert [j.id for j in second] == ["tw-job-3", "tw-job-4"]  # never a claimed one
            assert await store.claim("strong", 3, "c3", until=1000.0) == []
            assert await store.release_expired(now=500.0) == 0
            assert await store.release_expired(now=2000.0) == 5  # both claims lapsed
            again = await store.claim("strong", 10, "c4", until=5000.0)
            assert await store.renew("c4", until=6000.0) == 5  # the heartbeat of a slow upload
            assert await store.release_expired(now=5500.0) == 0  # renewed: not taken over
            assert await store.renew("c1", until=9000.0) == 0  # a lost claim renews nothing
            assert await store.submitted("c4", "batch_1") == 5 == len(again)
            assert await store.renew("c4", until=9000.0) == 0  # submitted: the claim is over
            assert await store.open_batches(now=10.0) == [("batch_1", "strong")]
            leased = await store.lease_batch("batch_1", now=10.0, until=20.0)
            assert len(leased) == 5
            assert await store.lease_batch("batch_1", now=11.0, until=21.0) == []  # taken
            assert await store.renew_batch("batch_1", until=22.0) == 5  # a long poll goes on
            assert await store.lease_batch("batch_1", now=21.5, until=31.0) == []
            assert await store.open_batches(now=11.0) == []
            await store.release_batch("batch_1", until=30.0)  # still running: poll again later
            assert await store.open_batches(now=25.0) == []
            assert await store.open_batches(now=31.0) == [("batch_1", "strong")]
            assert await store.finish(leased[0], {"id": "x"}, None, now=12.0)
            assert not await store.finish(leased[0], None, "late", now=13.0)  # finished once
            done = await store.get("tw-job-0", "t1")
            assert done is not None and done.status == "completed" and done.result == {"id": "x"}
            assert done.request == {}  # the prompt is not kept once answered
            assert await store.get("tw-job-0", "another tenant") is None
            assert await store.finish(leased[1], None, "refused", now=14.0)
            # retention: only finished jobs older than the cut go; open ones never do
            assert await store.purge(finished_before=13.0) == 1
            assert await store.get("tw-job-0", "t1") is None
            assert await store.get("tw-job-1", "t1") is not None
            assert await store.purge(finished_before=1e12) == 1
            assert len(await store.lease_batch("batch_1", now=40.0, until=50.0)) == 3
        finally:
            await store.aclose()

    asyncio.run(run())


def test_job_store_refuses_other_urls() -> None:
    with pytest.raises(InvalidData):
        open_job_store("mysql://x")
