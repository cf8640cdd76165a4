"""The traffic database unavailable (locked at run time, unusable at start), and the gateway
killed with SIGKILL under 16 concurrent clients, then restarted on the same database.

What the gateway does, as measured here: a record that cannot be committed does not fail the
request (the answer still goes out, ``tierwise_gateway_traffic_write_errors_total`` counts the
loss, the error is logged); a store that cannot be opened at start-up stops the gateway from
starting (exit code 1, the reason logged).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gateway_support import CLIENT_KEY, EASY, KEY_ENV, UPSTREAM_KEY, Upstreams, config_doc
from reliability_servers import start_gateway_process

from router_model.errors import InvalidData
from service.gateway.app import create_gateway_app
from service.gateway.assembly import GatewayOptions
from service.gateway.config import parse_gateway_config


def ask(http: httpx.Client, i: int, stream: bool = False) -> httpx.Response:
    return http.post("/v1/chat/completions", json={
        "model": "tierwise-auto", "stream": stream,
        "messages": [{"role": "user", "content": f"{EASY} number {i}"}]})


@pytest.mark.slow
@pytest.mark.reliability(
    scenario="Traffic database unavailable at run time (SQLite locked)",
    action="another connection holds an exclusive lock on the gateway's SQLite database while "
           "2 concurrent requests (1 streamed) arrive; then the lock is released",
    expected="requests still answered (after the 5 s busy timeout); the lost records are "
             "counted in tierwise_gateway_traffic_write_errors_total; recording resumes after")
def test_locked_sqlite_still_answers(
    make_gateway: Any, fast_bundle: Path, observed: Any
) -> None:
    gw = make_gateway(fast_bundle)
    db = gw.config.traffic.url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    start = time.monotonic()
    try:
        with gw.http() as http, ThreadPoolExecutor(2) as pool:
            locked = list(pool.map(lambda i: ask(http, i, i % 2 == 1), range(2)))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    took = time.monotonic() - start
    with gw.http() as http:
        after = ask(http, 99)
        metrics = http.get("/metrics").text
    assert [r.status_code for r in locked] == [200] * 2
    assert b"[DONE]" in locked[1].content
    assert "tierwise_gateway_traffic_write_errors_total 2.0" in metrics
    with sqlite3.connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT decision_id FROM traffic")}
    assert stored == {after.headers["x-tierwise-decision-id"]}
    observed(f"2/2 answered 200 in {took:.1f} s while locked; write errors counted 2; "
             "next request recorded after the lock was released")


@pytest.mark.reliability(
    scenario="Traffic database unusable at start",
    action="gateway started with a SQLite path under a regular file, and with a PostgreSQL URL "
           "where nothing listens",
    expected="the gateway refuses to start with InvalidData naming the store (tierwise "
             "gateway exits 1)")
def test_unusable_store_refuses_start(
    upstreams: Upstreams, fast_bundle: Path, tmp_path: Path, observed: Any
) -> None:
    (tmp_path / "file").write_text("not a directory", "utf-8")
    urls = {"sqlite": f"sqlite:///{tmp_path / 'file' / 'traffic.db'}",
            "postgresql": "postgresql://tierwise@127.0.0.1:1/traffic"}
    messages = []
    for url in urls.values():
        doc = config_doc(upstreams, tmp_path, router={"bundle": str(fast_bundle)},
                         traffic={"url": url})
        app = create_gateway_app(parse_gateway_config(doc), GatewayOptions(require_auth=False))

        async def start(app: Any = app) -> None:
            async with app.router.lifespan_context(app):
                pass

        with pytest.raises(InvalidData, match="traffic store") as err:
            asyncio.run(start())
        messages.append(str(err.value).replace(str(tmp_path), "<tmp>").splitlines()[0])
    observed(f"refused to start: {messages}")


@pytest.mark.slow
@pytest.mark.reliability(
    scenario="Gateway killed (SIGKILL) under load, then restarted",
    action="tierwise gateway subprocess, 16 concurrent clients (half streamed); SIGKILL after "
           "40 complete answers; restart on the same SQLite file and serve again",
    expected="every answered request's record is in the database after the restart; the "
             "restarted gateway answers and records")
def test_gateway_sigkill_restart(
    upstreams: Upstreams, fast_bundle: Path, tmp_path: Path, observed: Any
) -> None:
    doc = config_doc(upstreams, tmp_path, router={"bundle": str(fast_bundle)})
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {**os.environ, KEY_ENV: UPSTREAM_KEY, "TIERWISE_API_KEYS": CLIENT_KEY}
    gateway = start_gateway_process(config, env, tmp_path / "gateway1.log")
    answered: list[str] = []
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}

    def one(http: httpx.Client, i: int) -> None:
        try:
            r = ask(http, i, i % 2 == 1)
        except httpx.HTTPError:
            return
        complete = b"[DONE]" in r.content if i % 2 else b'"choices"' in r.content
        if r.status_code == 200 and complete:
            answered.append(r.headers["x-tierwise-decision-id"])
            if len(answered) == 40:
                gateway.kill(signal.SIGKILL)

    with httpx.Client(base_url=gateway.http_url, timeout=10, headers=headers) as http, \
            ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: one(http, i), range(200)))
    assert gateway.proc.returncode == -signal.SIGKILL and len(answered) >= 40
    restarted = start_gateway_process(config, env, tmp_path / "gateway2.log")
    try:
        with httpx.Client(base_url=restarted.http_url, timeout=10, headers=headers) as http:
            again = ask(http, 1000)
    finally:
        restarted.stop()
    assert again.status_code == 200
    with sqlite3.connect(tmp_path / "traffic.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT decision_id FROM traffic")}
    missing = set(answered) - stored
    assert not missing
    assert again.headers["x-tierwise-decision-id"] in stored
    lost_logs = re.findall(r"was not committed", gateway.logs())
    observed(f"{len(answered)} answered before the kill, all {len(answered)} in the database "
             f"({len(stored) - 1} stored in all, {len(lost_logs)} commit errors logged); "
             "restarted gateway answered and recorded")
