"""The Compose stack brought up with podman-compose: two gateway replicas behind HAProxy, one
router, PostgreSQL and Prometheus, as ``deploy/compose.yaml`` describes them.

The stack is ``deploy/compose.yaml`` itself, rewritten only where a test must: a project name of
its own, the images built for this run, free host ports, the gateway config's upstreams pointed at
a fake OpenAI upstream (``tests/fake_upstream.py`` in the serving image, one more service) and no
MLflow service (the router serves a bundle path; ``test_compose_registry.py`` adds MLflow).
Everything else (HAProxy's config, PostgreSQL's start script, the keys file, Prometheus and its
rules) is the shipped file. Needs podman-compose (Debian package) besides what the other deploy
tests need.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from compose_support import (
    OTHER_KEY,
    RPM,
    Stack,
    bring_up,
    chat,
    client,
    compose,
    requests_served,
    stack_doc,
    write_stack,
)
from deploy_support import free_port, podman, report


@pytest.fixture(scope="module")
def stack(serve_image: str, infra_image: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("compose")
    ports = {name: free_port() for name in ("haproxy", "gateway-1", "gateway-2", "prometheus")}
    path = write_stack(tmp, stack_doc(tmp, {"serve": serve_image, "infra": infra_image}, ports))
    st = Stack(f"tw{uuid.uuid4().hex[:8]}", ports)
    start = time.monotonic()
    try:
        bring_up(st, path, ready=("gateway-1", "gateway-2", "haproxy"))
        report(f"compose stack (router, 2 gateways, HAProxy, PostgreSQL, Prometheus, upstream): "
               f"up and ready through HAProxy in {time.monotonic() - start:.0f} s")
        yield st
    finally:
        compose(st.project, "-f", str(path), "down", "-v")


def test_requests_through_haproxy_reach_both_replicas_and_are_recorded_once(stack: Stack) -> None:
    before = {s: requests_served(stack, s) for s in ("gateway-1", "gateway-2")}
    with client(stack.url("haproxy")) as http:
        answers = [chat(http, f"Name a colour of the rainbow, please ({i}).") for i in range(20)]
    assert [r.status_code for r in answers] == [200] * 20, answers[-1].text
    served = {s: requests_served(stack, s) - before[s] for s in before}
    assert served["gateway-1"] >= 5 and served["gateway-2"] >= 5, served  # round robin
    stored = stack.records()
    ids = [r.headers["x-tierwise-decision-id"] for r in answers]
    assert all(stored[d] == 1 for d in ids), {d: stored[d] for d in ids}


def test_an_answer_cached_by_one_replica_is_a_hit_on_the_other(stack: Stack) -> None:
    text = f"What is the boiling point of water at sea level? ({uuid.uuid4().hex[:6]})"
    entries = int(stack.sql("SELECT count(*) FROM response_cache")[0][0])
    with client(stack.url("gateway-1")) as one, client(stack.url("gateway-2")) as two:
        first = chat(one, text)
        deadline = time.monotonic() + 20  # the shared cache writes behind the answer
        while int(stack.sql("SELECT count(*) FROM response_cache")[0][0]) == entries:
            assert time.monotonic() < deadline, "replica 1 never stored its answer"
            time.sleep(0.2)
        second = chat(two, text)
    assert first.status_code == second.status_code == 200
    assert "x-tierwise-cache" not in first.headers
    assert second.headers.get("x-tierwise-cache") == "exact", dict(second.headers)
    assert second.json()["choices"] == first.json()["choices"]


def test_a_keys_rate_limit_holds_across_both_replicas(stack: Stack) -> None:
    if time.time() % 60 > 45:  # the limit's windows are calendar minutes: start early in one
        time.sleep(61 - time.time() % 60)
    statuses: Counter[int] = Counter()
    retry_after = set()
    with client(stack.url("gateway-1"), OTHER_KEY) as one, \
            client(stack.url("gateway-2"), OTHER_KEY) as two:
        for i in range(RPM + 20):  # alternating: each replica alone would admit all of them
            r = chat(one if i % 2 else two, f"Count to three ({i}).")
            statuses[r.status_code] += 1
            if r.status_code == 429:
                retry_after.add(r.headers.get("retry-after") is not None)
    assert statuses == {200: RPM, 429: 20}, statuses
    assert retry_after == {True}


def test_prometheus_scrapes_the_router_and_both_gateways(stack: Stack) -> None:
    deadline = time.monotonic() + 90
    up: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            doc = httpx.get(stack.url("prometheus") + "/api/v1/query", params={"query": "up"},
                            timeout=5).json()
            up = {r["metric"]["instance"]: r["value"][1] for r in doc["data"]["result"]}
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if up == {"router:8080": "1", "gateway-1:8000": "1", "gateway-2:8000": "1"}:
            return
        time.sleep(1)
    raise AssertionError(f"prometheus targets: {up}")


def test_killing_a_replica_under_load_loses_no_record(stack: Stack) -> None:
    """SIGKILL gateway-2 after 40 answers while 8 clients send 160 requests through HAProxy."""
    answered: list[str] = []
    failed: Counter[str] = Counter()
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> None:
        http = getattr(local, "http", None)
        if http is None:
            http = local.http = client(stack.url("haproxy"))
            with lock:
                clients.append(http)
        try:
            r = chat(http, f"Give one synonym of 'fast' ({i}).")
        except httpx.HTTPError as exc:
            with lock:
                failed[type(exc).__name__] += 1
            return
        with lock:
            if r.status_code != 200:
                failed[f"http {r.status_code}"] += 1
                return
            answered.append(r.headers["x-tierwise-decision-id"])
            if len(answered) == 40:
                podman("kill", "--signal", "KILL", stack.container("gateway-2"))

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(160)))
    for http in clients:
        http.close()
    took = time.monotonic() - start
    stored = stack.records()
    lost = [d for d in answered if stored[d] != 1]
    assert not lost, (len(lost), failed)
    # in flight on the killed replica: HAProxy answers 502 (it cannot know whether it was served)
    assert len(answered) >= 150, (len(answered), failed)
    report(f"compose: gateway-2 killed (SIGKILL) after 40 of 160 answers through HAProxy: "
           f"{len(answered)} answered in {took:.1f} s, failed {dict(failed) or 0}, "
           f"all {len(answered)} recorded exactly once")
