"""The Compose stack brought up with podman-compose: two gateway replicas behind HAProxy, one
router, PostgreSQL and Prometheus, as ``deploy/compose.yaml`` describes them.

The stack is ``deploy/compose.yaml`` itself, rewritten only where a test must: a project name of
its own, the images built for this run, free host ports, the gateway config's upstreams pointed at
a fake OpenAI upstream (``tests/fake_upstream.py`` in the serving image, one more service) and no
MLflow service (the router serves a bundle path; the registry is covered by the retrain tests).
Everything else (HAProxy's config, PostgreSQL's start script, the keys file, Prometheus and its
rules) is the shipped file. Needs podman-compose (Debian package) besides what the other deploy
tests need.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from deploy_support import CONTAINERS_CONF, REPO, free_port, podman, report

DEPLOY = REPO / "deploy"
KEY, OTHER_KEY = "client-key-1", "client-key-2"  # deploy/compose/keys.env
#: Requests per minute per key: above what the other tests send with KEY (182).
RPM = 240
PG_PASSWORD = "tierwise"  # keys.env's PGPASSWORD, run-postgres's default
UPSTREAM = ("import sys; sys.path.insert(0, '/fake'); import uvicorn; "
            "from fake_upstream import FakeUpstream; "
            "uvicorn.run(FakeUpstream('compose').app(), host='0.0.0.0', port=9000, "
            "log_level='warning')")


@dataclass
class Stack:
    project: str
    ports: dict[str, int]  # haproxy, gateway-1, gateway-2, prometheus

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def sql(self, query: str) -> list[list[str]]:
        """Rows of ``query``, run by psql in the PostgreSQL container."""
        done = podman("exec", "-e", f"PGPASSWORD={PG_PASSWORD}", self.container("postgres"),
                      "psql", "-h", "/tmp", "-U", "tierwise", "-d", "tierwise", "-Atc", query)
        return [line.split("|") for line in done.stdout.splitlines() if line]

    def records(self) -> Counter[str]:
        """decision id -> number of traffic rows."""
        rows = self.sql("SELECT decision_id, count(*) FROM traffic GROUP BY decision_id")
        return Counter({decision: int(count) for decision, count in rows})


def compose(project: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    return subprocess.run(
        ["podman-compose", "--podman-args=--runtime runc --cgroup-manager=cgroupfs",
         "-p", project, *args], capture_output=True, text=True, env=env, timeout=timeout,
        check=False)


def stack_file(tmp: Path, images: dict[str, str], ports: dict[str, int]) -> Path:
    """``deploy/compose.yaml`` with this run's images, ports, config and fake upstream."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    services: dict[str, Any] = doc["services"]
    del services["mlflow"]
    gateway = yaml.safe_load((DEPLOY / "compose" / "gateway.yaml").read_text("utf-8"))
    for tier in gateway["tiers"]:
        tier["base_url"] = "http://upstream:9000/v1"
    gateway["limits"] = {"requests_per_minute": RPM}  # per key, shared through PostgreSQL
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(gateway), "utf-8")
    for name, svc in services.items():
        svc.pop("build", None)
        svc["image"] = images["infra" if "infra" in svc["image"] else "serve"]
        volumes = []
        for volume in svc.get("volumes", []):
            source, rest = str(volume).split(":", 1)
            if source == "./compose/gateway.yaml":
                source = str(tmp / "gateway.yaml")
            elif source.startswith("."):
                source = str((DEPLOY / source).resolve())
            volumes.append(f"{source}:{rest}")
        if volumes:
            svc["volumes"] = volumes
        svc["env_file"] = [str((DEPLOY / f).resolve()) for f in svc.get("env_file", [])]
        if not svc["env_file"]:
            del svc["env_file"]
        svc.pop("ports", None)
        if name in ports:
            inner = {"haproxy": 8000, "gateway-1": 8000, "gateway-2": 8000,
                     "prometheus": 9090}[name]
            svc["ports"] = [f"127.0.0.1:{ports[name]}:{inner}"]
    services["upstream"] = {
        "image": images["serve"], "entrypoint": ["python3", "-c", UPSTREAM], "command": [],
        "user": "10001:10001", "read_only": True,
        "volumes": [f"{REPO / 'tests' / 'fake_upstream.py'}:/fake/fake_upstream.py:ro"]}
    for name in ("gateway-1", "gateway-2"):
        services[name]["depends_on"] = [*services[name]["depends_on"], "upstream"]
    path = tmp / "compose.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    return path


def wait_ready(url: str, limit_s: float = 180) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready in {limit_s} s")


@pytest.fixture(scope="module")
def stack(serve_image: str, base_image: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    if shutil.which("podman-compose") is None:
        pytest.skip("podman-compose is not installed (apt-get install podman-compose)")
    infra = "localhost/tierwise-infra:test-deploy"
    podman("build", "--network=host", "--build-arg", f"BASE_IMAGE={base_image}", "-t", infra,
           "-f", str(DEPLOY / "compose" / "infra.Containerfile"), str(DEPLOY / "compose"),
           timeout=1200)
    tmp = tmp_path_factory.mktemp("compose")
    ports = {name: free_port() for name in ("haproxy", "gateway-1", "gateway-2", "prometheus")}
    path = stack_file(tmp, {"serve": serve_image, "infra": infra}, ports)
    project = f"tw{uuid.uuid4().hex[:8]}"
    st = Stack(project, ports)
    start = time.monotonic()
    try:
        try:
            up = compose(project, "-f", str(path), "up", "-d", "--no-build")
            assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
            for name in ("gateway-1", "gateway-2", "haproxy"):
                wait_ready(st.url(name) + "/readyz")
        except AssertionError as exc:  # the containers' own words on why
            logs = [f"--- {name}\n" + "".join(podman("logs", "--tail", "15", st.container(name),
                                                     check=False).stderr[-1500:])
                    for name in ("postgres", "router", "gateway-1", "gateway-2", "haproxy")]
            raise AssertionError(f"{exc}\n" + "\n".join(logs)) from exc
        report(f"compose stack (router, 2 gateways, HAProxy, PostgreSQL, Prometheus, upstream): "
               f"up and ready through HAProxy in {time.monotonic() - start:.0f} s")
        yield st
    finally:
        compose(project, "-f", str(path), "down", "-v")


def chat(http: httpx.Client, text: str) -> httpx.Response:
    return http.post("/v1/chat/completions", json={
        "model": "tierwise-auto", "messages": [{"role": "user", "content": text}]})


def requests_served(stack: Stack, service: str) -> float:
    text = httpx.get(stack.url(service) + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tierwise_gateway_requests_total{"))


def client(url: str, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"authorization": f"Bearer {key}"})


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
