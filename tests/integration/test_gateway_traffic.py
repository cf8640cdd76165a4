"""The traffic store on SQLite and PostgreSQL, and that a kill -9 loses no answered record."""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from gateway_support import (  # noqa: F401  (fixtures)
    CLIENT_KEY,
    EASY,
    HARD,
    KEY_ENV,
    UPSTREAM_KEY,
    Gateway,
    Upstreams,
    child_env_fixture,
    config_doc,
    make_gateway_fixture,
    postgres_url_fixture,
    upstreams_fixture,
)

from router_model.errors import NotFound
from router_model.records import FeedbackRecord, TrafficRecord
from service.store.backends import open_store
from service.store.traffic import COLUMNS

REPO = Path(__file__).resolve().parents[2]


def sample(i: int = 0, **changes: Any) -> TrafficRecord:
    doc: dict[str, Any] = {
        "decision_id": uuid.uuid4().hex, "arm": "router", "propensity": 0.8, "source": "router",
        "requested_model": "tierwise-auto", "decided_tier": "weak", "tier": "strong",
        "model": "gpt-4-1106-preview", "router_tier": "weak", "status": 200, "stream": True,
        "failovers": 1, "input_tokens": 11 + i, "output_tokens": 7, "cost_usd": 1e-4,
        "top_tier_cost_usd": 3e-4, "latency_ms": 12.5, "router_latency_ms": 0.4, "quality": 0.6,
        "min_tier": "weak", "max_tier": "strong", "probabilities": {"weak": 0.7, "strong": 0.3},
        "model_version": "tiny:abc", "feature_version": 1, "features": [0.1, -2.5, 1e-7, 3.0],
        "prompt_sha256": "0123456789ab", "tenant": "f" * 64,
    }
    doc.update(changes)
    return TrafficRecord(**doc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_store_round_trip_feedback_and_savings(store_url: str) -> None:
    async def run() -> None:
        store = open_store(store_url)
        await store.start()
        try:
            records = [sample(i) for i in range(40)]
            await asyncio.gather(*(store.record(r) for r in records))  # group-committed
            for r in records[:3]:
                assert await store.get(r.decision_id) == r  # every field, features bit-exact
            assert await store.get("nope") is None
            first, tenant = records[0].decision_id, records[0].tenant
            await store.add_feedback(FeedbackRecord(decision_id=first, score=0.3), tenant)
            await store.add_feedback(FeedbackRecord(decision_id=first, thumbs="down"), tenant)
            labels = await store.feedback_for(first)
            assert [f.value for f in labels] == [0.3, 0.0]
            with pytest.raises(NotFound):
                await store.add_feedback(FeedbackRecord(decision_id="missing", thumbs="up"),
                                         tenant)
            with pytest.raises(NotFound):  # another tenant's decision: as if it did not exist
                await store.add_feedback(FeedbackRecord(decision_id=first, thumbs="up"),
                                         "another")
            assert len(await store.feedback_for(first)) == 2
            with pytest.raises(psycopg.errors.UniqueViolation if "postgres" in store_url
                               else sqlite3.IntegrityError):
                await store.record(records[1])
            report = await store.savings()
            assert report.total.requests == 40 and report.by_arm["router"].requests == 40
            assert report.total.savings_usd == pytest.approx(40 * 2e-4)
            assert report.savings_pct == pytest.approx(100 * 2 / 3, abs=0.05)
        finally:
            await store.aclose()
        reopened = open_store(store_url)  # the schema is created only when missing
        await reopened.start()
        assert await reopened.get(records[5].decision_id) == records[5]
        await reopened.aclose()

    asyncio.run(run())


def test_columns_are_the_record_fields() -> None:
    assert [c.name for c in COLUMNS] == list(TrafficRecord.model_fields)


def test_gateway_on_postgresql(make_gateway: Any, fast_bundle: Path, postgres_url: str) -> None:
    gw = make_gateway(fast_bundle, traffic={"url": postgres_url, "store_prompts": False})
    client = gw.client()
    ids = []
    for text in (HARD, EASY):
        raw = client.chat.completions.with_raw_response.create(
            model="tierwise-auto", messages=[{"role": "user", "content": text}])
        ids.append(raw.headers["x-tierwise-decision-id"])
    chunks = list(client.chat.completions.create(
        model="weak", messages=[{"role": "user", "content": EASY}], stream=True))
    ids.append(chunks[0].model_extra["tierwise"]["decision_id"])
    with gw.http() as http:
        assert http.post("/v1/feedback", json={"decision_id": ids[0], "thumbs": "up"}).is_success
        assert http.post("/v1/feedback", json={"decision_id": "x", "score": 1}).status_code == 404
    with gw.http("tw-admin-key") as http:
        assert http.get("/v1/admin/savings").json()["total"]["requests"] == 3
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT decision_id, arm, propensity, stream, source, length(features), prompt "
            "FROM traffic").fetchall()
        feedback = conn.execute("SELECT decision_id, value FROM feedback").fetchall()
    by_id = {r[0]: r for r in rows}
    assert set(by_id) == set(ids)
    assert by_id[ids[0]][1:5] == ("router", 1.0, False, "router")
    assert by_id[ids[0]][5] > 0 and by_id[ids[0]][6] is None
    assert by_id[ids[2]][3:5] == (True, "passthrough") and by_id[ids[2]][5] == 0
    assert feedback == [(ids[0], 1.0)]


def _wait_for(lines: queue.Queue[str], pattern: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert proc.poll() is None, "the gateway exited"
            continue
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no log line matching {pattern!r}")


def _answered(http: httpx.Client, i: int) -> str | None:
    """One request; its decision id once the answer is complete (None if it never was)."""
    body = {"model": "tierwise-auto", "messages": [{"role": "user", "content": f"{EASY} {i}"}],
            "stream": i % 2 == 1}
    try:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            data = response.read()
            if response.status_code != 200:
                return None
            if body["stream"] and not data.rstrip().endswith(b"data: [DONE]"):
                return None
            return response.headers["x-tierwise-decision-id"]
    except httpx.HTTPError:
        return None


@pytest.mark.slow
def test_kill_9_loses_no_answered_record(
    upstreams: Upstreams, tmp_path: Path, fast_bundle: Path, child_env: dict[str, str]
) -> None:
    doc = config_doc(upstreams, tmp_path, router={"bundle": str(fast_bundle)})
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {**child_env, KEY_ENV: UPSTREAM_KEY, "TIERWISE_API_KEYS": CLIENT_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "gateway", "--config", str(config),
         "--port", "0"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr or []],
                              daemon=True)
    reader.start()
    try:
        port = re.search(r"listening on http://127.0.0.1:(\d+)",
                         _wait_for(lines, "gateway listening", proc))
        assert port is not None
        _wait_for(lines, "Application startup complete", proc)
        answered: list[str] = []
        with ThreadPoolExecutor(4) as pool, httpx.Client(
            base_url=f"http://127.0.0.1:{port.group(1)}", timeout=10,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        ) as http:
            futures = [pool.submit(_answered, http, i) for i in range(100)]
            for future in as_completed(futures):
                if not future.cancelled() and (decision := future.result()) is not None:
                    answered.append(decision)
                if len(answered) >= 40 and proc.poll() is None:  # kill it mid-flight
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    for f in futures:
                        f.cancel()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(answered) >= 40
    with sqlite3.connect(tmp_path / "traffic.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT decision_id FROM traffic")}
    assert set(answered) <= stored
