"""deploy/prometheus and deploy/grafana against the real thing: ``promtool check rules``, then a
real Prometheus scraping a real gateway and router runs every rule and panel expression.

Skips where Debian's ``prometheus`` package (``promtool``, ``prometheus``) is not installed
(``.ci/run`` installs it). Every expression must parse and run, and every metric it names must be
one the gateway or the router exposes; the always-present series must also return data.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gateway_support import (  # noqa: F401  (fixtures)
    ADMIN_KEY,
    EASY,
    HARD,
    make_gateway_fixture,
    upstreams_fixture,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "tierwise.json"
#: Expressions that must return series as soon as both services have served a request.
ALWAYS = ("tierwise_gateway_breaker_open", "tierwise_model_info",
          "sum by (lever) (tierwise_gateway_lever_savings_usd)")
FUNCTIONS = {"sum", "rate", "increase", "max", "min", "by", "clamp_min", "histogram_quantile",
             "le", "tier", "lever", "reason", "op", "status", "code", "model_version"}


def expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    found = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    found += [t["expr"].replace("$__rate_interval", "1m") for p in panels for t in p["targets"]]
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (``tierwise_…`` words, histogram suffix dropped)."""
    return set(re.findall(r"\btierwise_[a-z0-9_]+", expr)) - FUNCTIONS


def exposed(url: str) -> set[str]:
    """Every series name a service's /metrics declares (``# TYPE`` lines: also the labelled
    metrics that have no series yet), with the suffixes Prometheus stores."""
    names = set()
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
            names |= {name, *(name + x for x in suffixes.get(kind, ()))}
    return names


def test_promtool_checks_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; .ci/run installs it)")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_prometheus(binary: str, tmp: Path, targets: dict[str, str]) -> tuple[Any, str]:
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [host]}]}
                                 for job, host in targets.items()]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def query(base: str, expr: str) -> list[Any]:
    doc = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert doc["status"] == "success", (expr, doc)
    result: list[Any] = doc["data"]["result"]
    return result


@pytest.mark.slow
def test_prometheus_runs_every_rule_and_panel(make_gateway: Any, fast_bundle: Path,
                                              fast_service: Any, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package 'prometheus'; .ci/run "
                    "installs it)")
    gw = make_gateway(fast_bundle, budget={"top_share": 0.2, "window": 10, "min_samples": 1})
    for text in (HARD, EASY):
        gw.client().chat.completions.create(
            model="tierwise-auto", messages=[{"role": "user", "content": text}])
    httpx.post(fast_service.http_url + "/v1/route", json={"prompt": EASY}, timeout=10)
    hosts = {"gateway": gw.url, "router": fast_service.http_url}
    proc, base = start_prometheus(binary, tmp_path, {
        job: url.split("//", 1)[1] for job, url in hosts.items()})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:  # 503 "Service Unavailable" (plain text) until its storage is ready
                ready = httpx.get(f"{base}/-/ready", timeout=10).status_code == 200
                if ready and all(query(base, f'up{{job="{j}"}} == 1') for j in hosts):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("prometheus never scraped both targets")
        names = set().union(*(exposed(url) for url in hosts.values()))
        for expr in expressions():
            query(base, expr)  # parses and runs
            missing = metric_names(expr) - names
            assert not missing, f"{expr!r} reads metrics nobody exposes: {missing}"
        for expr in ALWAYS:
            assert query(base, expr), f"{expr!r} returned no data"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
