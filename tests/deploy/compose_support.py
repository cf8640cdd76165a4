"""Helpers of the Compose stack tests: the shipped ``deploy/compose.yaml`` rewritten for a test
run (project name, images, free ports, a fake upstream), podman-compose, and the stack's
PostgreSQL read through psql in its container."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from deploy_support import CONTAINERS_CONF, REPO, podman, wait_ready

DEPLOY = REPO / "deploy"
KEY, OTHER_KEY = "client-key-1", "client-key-2"  # deploy/compose/keys.env
#: Requests per minute per key: above what the other tests send with KEY (182).
RPM = 240
#: How long a service of the stack may take to answer its health check.
READY_S = 180.0
PG_PASSWORD = "tierwise"  # keys.env's PGPASSWORD, run-postgres's default
UPSTREAM = ("import sys; sys.path.insert(0, '/fake'); import uvicorn; "
            "from fake_upstream import FakeUpstream; "
            "uvicorn.run(FakeUpstream('compose').app(), host='0.0.0.0', port=9000, "
            "log_level='warning')")


@dataclass
class Stack:
    project: str
    ports: dict[str, int]  # host port by service (those published: gateways, haproxy, ...)

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


def stack_doc(tmp: Path, images: dict[str, str], ports: dict[str, int]) -> dict[str, Any]:
    """``deploy/compose.yaml`` with this run's images (``serve``, ``infra``, and ``train``: without
    it, no MLflow service), host ports (by service), gateway config and fake upstream."""
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    services: dict[str, Any] = doc["services"]
    if "train" not in images:
        del services["mlflow"]
    gateway = yaml.safe_load((DEPLOY / "compose" / "gateway.yaml").read_text("utf-8"))
    for tier in gateway["tiers"]:
        tier["base_url"] = "http://upstream:9000/v1"
    gateway["limits"] = {"requests_per_minute": RPM}  # per key, shared through PostgreSQL
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(gateway), "utf-8")
    for name, svc in services.items():
        svc.pop("build", None)
        svc["image"] = images[next((k for k in ("infra", "train") if k in svc["image"]),
                                   "serve")]
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
                     "prometheus": 9090, "mlflow": 5000}[name]
            svc["ports"] = [f"127.0.0.1:{ports[name]}:{inner}"]
    services["upstream"] = {
        "image": images["serve"], "entrypoint": ["python3", "-c", UPSTREAM], "command": [],
        "user": "10001:10001", "read_only": True,
        "volumes": [f"{REPO / 'tests' / 'fake_upstream.py'}:/fake/fake_upstream.py:ro"]}
    for name in ("gateway-1", "gateway-2"):
        services[name]["depends_on"] = [*services[name]["depends_on"], "upstream"]
    return doc


def write_stack(tmp: Path, doc: dict[str, Any]) -> Path:
    path = tmp / "compose.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    return path


def bring_up(stack: Stack, path: Path, services: tuple[str, ...] = (),
             ready: tuple[str, ...] = ("gateway-1", "gateway-2")) -> None:
    """``up -d`` (of ``services``, else all), then wait for ``ready``'s /readyz; on failure
    the containers' last log lines are in the error."""
    try:
        up = compose(stack.project, "-f", str(path), "up", "-d", "--no-build", *services)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        for name in ready:
            wait_ready(stack.url(name) + "/readyz", READY_S)
    except AssertionError as exc:  # the containers' own words on why
        logs = [f"--- {name}\n" + podman("logs", "--tail", "15", stack.container(name),
                                         check=False).stderr[-1500:]
                for name in ("postgres", "router", "gateway-1", "gateway-2")]
        raise AssertionError(f"{exc}\n" + "\n".join(logs)) from exc


def chat(http: httpx.Client, text: str) -> httpx.Response:
    return http.post("/v1/chat/completions", json={
        "model": "tierwise-auto", "messages": [{"role": "user", "content": text}]})


def requests_served(stack: Stack, service: str) -> float:
    text = httpx.get(stack.url(service) + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tierwise_gateway_requests_total{"))


def client(url: str, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"authorization": f"Bearer {key}"})


