"""The batch window end to end: non-urgent requests -> 202 job -> upstream batch -> answer, cost.

Gateways and fake upstreams are real servers on loopback; the job and traffic stores are real
SQLite files (and PostgreSQL where TIERWISE_TEST_POSTGRES_URL is set).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from batch_support import (  # noqa: F401  (fixtures)
    FakeBatchUpstream,
    batch_upstreams_fixture,
    make_batch_gateway_fixture,
)
from gateway_support import (  # noqa: F401  (fixtures)
    HARD,
    STRONG,
    UPSTREAM_KEY,
    WEAK,
    Gateway,
    Upstreams,
    postgres_url_fixture,
    wait_until,
)

from router_model.records import TrafficRecord
from service.gateway.batch.jobs import Job, open_job_store
from service.store.backends import open_store

NON_URGENT = {"tierwise": {"urgent": False}}
#: The fake's usage (11 in, 7 out) at the strong tier's list prices (10 and 30 USD per 1M).
LISTED = (11 * 10.0 + 7 * 30.0) / 1e6


def submit(gw: Gateway, text: str, model: str = STRONG, key: str | None = None,
           **body: Any) -> Any:
    with gw.http(key) if key else gw.http() as http:
        return http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": text}], **body})


def wait_done(gw: Gateway, job_id: str, deadline: float | None = None) -> dict[str, Any]:
    """Poll the job until it is completed or failed (the loop only waits, it asserts nothing)."""
    deadline = deadline or time.monotonic() + 30
    with gw.http() as http:
        while True:
            doc: dict[str, Any] = http.get(f"/v1/tierwise/jobs/{job_id}").json()
            if doc.get("status") in ("completed", "failed") or time.monotonic() > deadline:
                return doc
            time.sleep(0.02)


def record_of(gw: Gateway, decision_id: str) -> TrafficRecord | None:
    async def read() -> TrafficRecord | None:
        store = open_store(gw.config.traffic.url)
        await store.start()
        try:
            return await store.get(decision_id)
        finally:
            await store.aclose()

    return asyncio.run(read())


def strong(ups: Upstreams) -> FakeBatchUpstream:
    assert isinstance(ups.strong, FakeBatchUpstream)
    return ups.strong


def test_non_urgent_requests_go_out_as_one_batch_at_half_price(
    make_batch_gateway: Any, batch_upstreams: Upstreams
) -> None:
    gw = make_batch_gateway({"max_requests": 3})  # window 600 s: only a full batch goes out
    client = gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model=STRONG, messages=[{"role": "user", "content": HARD}], extra_body=NON_URGENT)
    assert raw.http_response.status_code == 202
    first = raw.http_response.json()
    assert first["object"] == "tierwise.batch_job" and first["status"] == "queued"
    assert first["id"].startswith("tw-job-") and raw.headers["location"].endswith(first["id"])
    second = submit(gw, "Name a prime.", **NON_URGENT)
    with gw.http() as http:
        assert http.get(f"/v1/tierwise/jobs/{first['id']}").json()["status"] == "queued"
        third = http.post("/v1/chat/completions", headers={"x-tierwise-urgent": "false"},
                          json={"model": STRONG, "messages": [{"role": "user", "content": "2?"}]})
    assert second.status_code == third.status_code == 202
    ids = [first["id"], second.json()["id"], third.json()["id"]]
    docs = [wait_done(gw, i) for i in ids]
    assert [d["status"] for d in docs] == ["completed"] * 3
    up = strong(batch_upstreams)
    assert sorted(up.submitted) == sorted(ids) and len(up.batches) == 1
    assert all(x["body"]["model"] == STRONG and "tierwise" not in x["body"] for x in up.lines)
    assert up.headers == []  # nothing went to the synchronous endpoint
    assert up.batch_auth == [f"Bearer {UPSTREAM_KEY}"] * 2  # upload and create, with the tier's key
    answer = docs[0]["response"]
    assert answer["choices"][0]["message"]["content"] == "The answer is forty-two."
    info = answer["tierwise"]
    assert info["job_id"] == ids[0] and info["batch"] is True and info["tier"] == "strong"
    assert info["cost_usd"] == pytest.approx(LISTED / 2)
    assert info["batch_saved_usd"] == pytest.approx(LISTED / 2)
    record = record_of(gw, docs[0]["decision_id"])
    assert record is not None and record.status == 200 and record.tier == "strong"
    assert record.cost_usd == pytest.approx(LISTED / 2)
    assert record.top_tier_cost_usd == pytest.approx(LISTED)
    assert record.levers == {"batch": pytest.approx(LISTED / 2)}
    with gw.http(None) as http:
        metrics = http.get("/metrics").text
    for step in ("queued", "submitted", "completed"):
        assert f'tierwise_gateway_batch_jobs_total{{step="{step}"}} 3.0' in metrics
    saved = next(row for row in metrics.splitlines()
                 if row.startswith("tierwise_gateway_batch_saved_usd_total "))
    assert float(saved.split()[-1]) == pytest.approx(3 * LISTED / 2)


def test_routed_request_is_batched_on_the_routers_tier(
    make_batch_gateway: Any, batch_upstreams: Upstreams, fast_bundle: Path
) -> None:
    gw = make_batch_gateway({"max_requests": 1}, bundle=fast_bundle)
    body = {"tierwise": {"urgent": False, "min_tier": "strong"}}
    job = submit(gw, HARD, model="tierwise-auto", **body)
    assert job.status_code == 202 and job.headers["x-tierwise-tier"] == "strong"
    doc = wait_done(gw, job.json()["id"])
    assert doc["status"] == "completed"
    record = record_of(gw, doc["decision_id"])
    assert record is not None and record.source == "router" and record.router_tier == "strong"
    assert record.features and record.probabilities  # the routing outcome is kept for training


def test_requests_that_cannot_be_batched(make_batch_gateway: Any) -> None:
    gw = make_batch_gateway()
    weak = submit(gw, "hi", model=WEAK, **NON_URGENT)  # the weak tier has no batch price
    assert weak.status_code == 200 and weak.headers["x-tierwise-batch"] == "unsupported"
    stream = submit(gw, "hi", stream=True, **NON_URGENT)
    assert stream.status_code == 400 and stream.json()["error"]["param"] == "stream"
    with gw.http() as http:
        bad = http.post("/v1/chat/completions", headers={"x-tierwise-urgent": "later"},
                        json={"model": STRONG, "messages": [{"role": "user", "content": "x"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-tierwise-urgent"
        urgent = http.post("/v1/chat/completions", headers={"x-tierwise-urgent": "true"},
                           json={"model": STRONG, "messages": [{"role": "user", "content": "x"}]})
        assert urgent.status_code == 200 and "x-tierwise-batch" not in urgent.headers
        missing = http.get("/v1/tierwise/jobs/tw-job-nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        too_long = http.get("/v1/tierwise/jobs/" + "x" * 100)
        assert too_long.status_code == 404 and too_long.json()["error"]["code"] == "not_found"
    job = submit(gw, "mine", **NON_URGENT).json()["id"]
    with gw.http("tw-client-key-2") as other:
        assert other.get(f"/v1/tierwise/jobs/{job}").status_code == 404
    with gw.http(None) as anonymous:
        assert anonymous.get(f"/v1/tierwise/jobs/{job}").status_code == 401


def test_a_batched_pass_through_request_saves_by_batching_only(
    make_batch_gateway: Any, batch_upstreams: Upstreams
) -> None:
    from gateway_support import tier_docs

    tiers = tier_docs(batch_upstreams, weak={"batch_discount": 0.5})  # weak can batch too
    gw = make_batch_gateway({"max_requests": 1}, tiers=tiers)
    job = submit(gw, "hi", model=WEAK, **NON_URGENT)
    assert job.status_code == 202 and job.headers["x-tierwise-tier"] == "weak"
    doc = wait_done(gw, job.json()["id"])
    record = record_of(gw, doc["decision_id"])
    listed = (11 * 0.6 + 7 * 0.6) / 1e6  # the named (weak) model at list price: the baseline
    assert record is not None and record.source == "passthrough"
    assert record.top_tier_cost_usd == pytest.approx(listed)
    assert record.levers == {"batch": pytest.approx(listed / 2)}
    assert record.routing_savings_usd == pytest.approx(0.0, abs=1e-12)
    # the job's key made the decision: only it may label it (POST /v1/feedback)
    with gw.http("tw-client-key-2") as other, gw.http() as own:
        label = {"decision_id": record.decision_id, "thumbs": "up"}
        assert other.post("/v1/feedback", json=label).status_code == 404
        assert own.post("/v1/feedback", json=label).status_code == 200


def test_batch_window_off_answers_now(make_batch_gateway: Any) -> None:
    gw = make_batch_gateway({"enabled": False})
    answer = submit(gw, "hi", **NON_URGENT)
    assert answer.status_code == 200 and answer.headers["x-tierwise-batch"] == "off"
    assert answer.json()["choices"][0]["message"]["content"] == "The answer is forty-two."


@pytest.mark.parametrize("mode", ["fail", "upload_fail"])
def test_upstream_batch_failure_fails_every_job_with_its_error(
    make_batch_gateway: Any, batch_upstreams: Upstreams, mode: str
) -> None:
    strong(batch_upstreams).batch_mode = mode
    gw = make_batch_gateway({"max_requests": 2})
    ids = [submit(gw, f"q{i}", **NON_URGENT).json()["id"] for i in range(2)]
    docs = [wait_done(gw, i) for i in ids]
    assert [d["status"] for d in docs] == ["failed", "failed"]
    expected = "not available for batch" if mode == "fail" else "could not be submitted"
    assert all(expected in d["error"]["message"] and d["response"] is None for d in docs)
    for d in docs:  # the failure is in the traffic store too: nothing is lost silently
        record = record_of(gw, d["decision_id"])
        assert record is not None and record.status == 502 and record.cost_usd == 0.0


def test_one_refused_line_fails_only_its_job(
    make_batch_gateway: Any, batch_upstreams: Upstreams
) -> None:
    gw = make_batch_gateway({"max_requests": 3})
    ids = [submit(gw, f"q{i}", **NON_URGENT).json()["id"] for i in range(2)]
    strong(batch_upstreams).fail_ids.add(ids[1])
    ids.append(submit(gw, "q2", **NON_URGENT).json()["id"])
    docs = [wait_done(gw, i) for i in ids]
    assert [d["status"] for d in docs] == ["completed", "failed", "completed"]
    assert "content policy" in docs[1]["error"]["message"]


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}  # the fixture's default: one SQLite file in tmp_path for every gateway
    url: str = request.getfixturevalue("postgres_url")
    return {"traffic": {"url": url}}


def test_two_replicas_on_one_store_never_submit_a_request_twice(
    make_batch_gateway: Any, batch_upstreams: Upstreams, shared_store: dict[str, Any]
) -> None:
    batch = {"window_s": 0.05, "max_requests": 3, "poll_interval_s": 0.01}
    gateways = [make_batch_gateway(batch, **shared_store) for _ in range(2)]
    ids = [submit(gateways[i % 2], f"question {i}", **NON_URGENT).json()["id"]
           for i in range(12)]
    until = time.monotonic() + 30
    docs = [wait_done(gateways[(i + 1) % 2], job, until) for i, job in enumerate(ids)]
    assert [d["status"] for d in docs] == ["completed"] * len(ids)
    up = strong(batch_upstreams)
    assert sorted(up.submitted) == sorted(ids)  # each request in exactly one batch
    assert all(len(b["_lines"]) <= 3 for b in up.batches.values())
    for d in docs:
        record = record_of(gateways[0], d["decision_id"])
        assert record is not None and record.cost_usd == pytest.approx(LISTED / 2)


def test_a_submission_slower_than_the_lease_is_sent_once(
    make_batch_gateway: Any, batch_upstreams: Upstreams, shared_store: dict[str, Any]
) -> None:
    up = strong(batch_upstreams)
    up.upload_delay_s = 1.5  # a large batch file on a slow link: longer than the lease
    batch = {"window_s": 0.05, "poll_interval_s": 0.02, "lease_s": 1.0}
    gateways = [make_batch_gateway(batch, **shared_store) for _ in range(2)]
    job = submit(gateways[0], HARD, **NON_URGENT).json()["id"]
    doc = wait_done(gateways[1], job, time.monotonic() + 15)
    assert doc["status"] == "completed"
    # the claim was renewed while the upload ran: the other replica never took the job over
    assert list(up.batches) == ["batch_1"] and up.submitted == [job] and up.cancelled == []
    assert record_of(gateways[0], doc["decision_id"]) is not None


def take_over_claims(gw: Gateway) -> None:
    """Re-queue every claimed job, as a replica does once a claim's lease has lapsed."""
    async def run() -> None:
        store = open_job_store(gw.config.traffic.url)
        await store.start()
        try:
            assert await store.release_expired(time.time() + 1e6) == 1
        finally:
            await store.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("step", ["upload", "create"])
def test_a_claim_lost_mid_submission_leaves_no_paid_duplicate(
    make_batch_gateway: Any, batch_upstreams: Upstreams, step: str
) -> None:
    up = strong(batch_upstreams)
    setattr(up, f"{step}_delay_s", 0.5)
    gw = make_batch_gateway({"max_requests": 1})
    job = submit(gw, HARD, **NON_URGENT).json()["id"]
    wait_until(lambda: len(up.files if step == "upload" else up.batches) == 1, f"{step} sent")
    take_over_claims(gw)  # as after a stall (GC, lost store) longer than lease_s
    doc = wait_done(gw, job)
    assert doc["status"] == "completed"
    if step == "upload":  # the claim is checked before the batch is created: none was
        assert list(up.batches) == ["batch_1"] and up.cancelled == []
    else:  # the batch was created, and paid, under a lost claim: it is cancelled upstream
        assert list(up.batches) == ["batch_1", "batch_2"] and up.cancelled == ["batch_1"]
    assert up.submitted[-1] == job
    with gw.http(None) as http:
        metrics = http.get("/metrics").text
    assert 'tierwise_gateway_batch_jobs_total{step="claim_lost"} 1.0' in metrics
    assert 'tierwise_gateway_batch_jobs_total{step="submitted"} 1.0' in metrics


def test_a_queued_request_is_sent_by_whichever_replica_sees_it_due(
    make_batch_gateway: Any, batch_upstreams: Upstreams
) -> None:
    patient = make_batch_gateway({"max_requests": 2})  # would wait for a second request
    job = submit(patient, "queued here", **NON_URGENT).json()["id"]
    make_batch_gateway({"max_requests": 1})  # another replica (or a restart): the batch is full
    doc = wait_done(patient, job)
    assert doc["status"] == "completed" and strong(batch_upstreams).submitted == [job]


def test_estimated_usage_and_trimming_are_priced_like_answered_requests(
    make_batch_gateway: Any, batch_upstreams: Upstreams
) -> None:
    up = strong(batch_upstreams)
    up.send_usage = False  # the answer carries no usage: the router's tokenizer counts it
    gw = make_batch_gateway({"max_requests": 1})
    system = {"role": "system", "content": "Answer in one short sentence, please."}
    job = submit(gw, "Name a prime.", tierwise={"urgent": False, "trim": True},
                 messages=[system, system, {"role": "user", "content": "Name a prime."}])
    doc = wait_done(gw, job.json()["id"])
    assert doc["status"] == "completed"
    assert [m["role"] for m in up.lines[0]["body"]["messages"]] == ["system", "user"]
    info = doc["response"]["tierwise"]
    assert info["usage_source"] == "estimated" and info["trimmed_tokens"] > 0
    record = record_of(gw, doc["decision_id"])
    assert record is not None and record.usage_source == "estimated"
    n_in, n_out, cut = record.input_tokens, record.output_tokens, info["trimmed_tokens"]
    listed = (n_in * 10.0 + n_out * 30.0) / 1e6
    assert n_in > 0 and n_out > 0 and record.cost_usd == pytest.approx(listed / 2)
    assert record.levers == {"batch": pytest.approx(listed / 2),
                             "trim": pytest.approx(cut * 10.0 / 1e6)}
    assert record.top_tier_cost_usd == pytest.approx(((n_in + cut) * 10.0 + n_out * 30.0) / 1e6)


def test_postgres_job_stores_start_together_and_claim_disjoint_jobs(postgres_url: str) -> None:
    async def run() -> None:
        stores = [open_job_store(postgres_url) for _ in range(3)]
        await asyncio.gather(*(s.start() for s in stores))  # a new database: racing CREATEs
        try:
            for i in range(30):
                await stores[0].add(Job(f"tw-job-{i:02d}", "t", "strong", "queued", 1.0 + i,
                                        {"messages": []}, {"decision_id": f"d{i}"}))
            claims = await asyncio.gather(*(
                stores[i % 3].claim("strong", 4, f"c{i}", until=1e12) for i in range(9)))
            ids = [j.id for claim in claims for j in claim]
            assert sorted(ids) == [f"tw-job-{i:02d}" for i in range(30)]  # each exactly once
        finally:
            await asyncio.gather(*(s.aclose() for s in stores))

    asyncio.run(run())
