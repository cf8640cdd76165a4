"""The Compose stack's files: every service, reference and config is consistent.

Static checks (they need no containers); ``test_compose_stack.py`` brings the stack up.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from deploy_support import REPO

from service.gateway.config import load_gateway_config, parse_gateway_config

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose"


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_services_and_their_roles(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert set(services) == {"postgres", "mlflow", "router", "gateway-1", "gateway-2", "haproxy",
                             "prometheus"}
    for name in ("router", "gateway-1", "gateway-2"):
        svc = services[name]
        assert svc["image"] == "localhost/tierwise:latest", name
        assert svc["read_only"] is True and svc["user"].startswith("10001"), name
        assert any(str(v).endswith(":/var/lib/tierwise") for v in svc["volumes"]), name
    for name in ("gateway-1", "gateway-2"):
        command = services[name]["command"]
        assert command[:3] == ["gateway", "--config", "/etc/tierwise/gateway.yaml"]
    assert services["mlflow"]["build"]["target"] == "train"
    # every file a service mounts exists
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        for env_file in svc.get("env_file", []):
            assert (DEPLOY / env_file).exists(), f"{name}: {env_file}"
        assert "<<" not in svc
    named = {str(v).split(":")[0] for svc in services.values() for v in svc.get("volumes", [])
             if not str(v).startswith(".")}
    assert named <= set(stack["volumes"])


def test_gateway_config_is_valid_and_names_the_services(stack: dict[str, Any]) -> None:
    config = load_gateway_config(COMPOSE / "gateway.yaml")
    assert config.router.address is not None
    assert config.router.address.split(":")[0] in stack["services"]
    for url in (config.traffic.url, config.cache.url):
        assert url is not None and url.startswith("postgresql://")
        assert "@postgres:" in url and ":" not in url.split("//")[1].split("@")[0]  # no password
    keys = dict(line.split("=", 1) for line in (COMPOSE / "keys.env").read_text().splitlines()
                if line and not line.startswith("#"))
    assert set(config.api_key_envs()) | {"TIERWISE_API_KEYS", "PGPASSWORD"} <= set(keys)


def test_load_balancer_and_prometheus_reach_both_replicas(stack: dict[str, Any]) -> None:
    haproxy = (COMPOSE / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server\s+\S+\s+([\w-]+):(\d+)", haproxy, re.M)
    assert sorted(host for host, _ in servers) == ["gateway-1", "gateway-2"]
    ports = {s: s_cfg["environment"]["TIERWISE_GATEWAY__PORT"]
             for s, s_cfg in stack["services"].items() if s.startswith("gateway-")}
    assert all(ports[host] == port for host, port in servers)
    assert "httpchk GET /readyz" in haproxy
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    assert targets == {"router:8080", "gateway-1:8000", "gateway-2:8000"}


def test_prometheus_rules_and_config_parse() -> None:
    rules = yaml.safe_load((COMPOSE / "rules.yml").read_text())
    assert rules["groups"][0]["rules"]
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian's prometheus) is not installed: rules parsed as YAML only")
    for check in (["rules", str(COMPOSE / "rules.yml")],
                  ["config", "--syntax-only", str(COMPOSE / "prometheus.yml")]):
        done = subprocess.run(["promtool", "check", *check], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("tree", ["base/config/gateway.yaml", "overlays/local/gateway.yaml"])
def test_k8s_gateway_configs_are_valid(tree: str) -> None:
    path = DEPLOY / "k8s" / tree
    parse_gateway_config(yaml.safe_load(path.read_text()), source=str(path))

