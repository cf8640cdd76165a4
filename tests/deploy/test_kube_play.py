"""``podman kube play`` of the rendered local overlay: the router and the gateway run, and a chat
request through the gateway is routed (to a fake upstream on the host's loopback).

kube play runs Deployments (one pod each) on the host's network; it does not resolve Secret
references or Services, so the test turns the Secret into plain env values, names the router by
loopback address, and moves every port to a free one (these machines are shared).
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import free_port, podman, report, wait_ready
from fake_upstream import FakeUpstream, serving
from test_image import post
from test_k8s import by_kind, pod_spec, render

KEY = "kube-play-client-key"


def set_env(container: dict[str, Any], values: dict[str, str]) -> None:
    env = [e for e in container.get("env", []) if e["name"] not in values]
    container["env"] = env + [{"name": k, "value": v} for k, v in values.items()]


def local_manifests(tmp: Path, upstream: str, ports: dict[str, int],
                    image: str) -> tuple[Path, Path]:
    docs = render("overlays/local")
    secret = next(iter(by_kind(docs, "Secret").values()))
    keys = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    keys["TIERWISE_API_KEYS"] = KEY
    config_map = next(iter(by_kind(docs, "ConfigMap").values()))
    config = yaml.safe_load(config_map["data"]["gateway.yaml"])
    for tier in config["tiers"]:
        tier["base_url"] = f"{upstream}/v1"
    config["router"]["address"] = f"127.0.0.1:{ports['grpc']}"
    config_map["data"]["gateway.yaml"] = yaml.safe_dump(config)
    deployments = by_kind(docs, "Deployment")
    for doc in deployments.values():
        for c in pod_spec(doc)["containers"]:
            c["image"] = image
    router = pod_spec(deployments["tierwise-router"])["containers"][0]
    set_env(router, {"TIERWISE_SERVICE__HTTP_PORT": str(ports["http"]),
                     "TIERWISE_SERVICE__GRPC_PORT": str(ports["grpc"])})
    gateway = pod_spec(deployments["tierwise-gateway"])["containers"][0]
    gateway.pop("envFrom")
    set_env(gateway, {"TIERWISE_GATEWAY__PORT": str(ports["gateway"]), **keys})
    for container, port in ((router, ports["http"]), (gateway, ports["gateway"])):
        container.pop("ports")  # host network: no port mappings (kube play refuses them)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            # podman turns probes into health checks: http and tcp only, on the new ports
            container[probe] = {**{k: v for k, v in container[probe].items()
                                   if k not in ("httpGet", "grpc")},
                                "httpGet": {"path": "/healthz", "port": port}}
    play = tmp / "play.yaml"
    play.write_text(yaml.safe_dump_all(list(deployments.values())))
    cm = tmp / "configmap.yaml"
    cm.write_text(yaml.safe_dump(config_map))
    return play, cm


@pytest.fixture
def played(serve_image: str, tmp_path: Path) -> Iterator[tuple[dict[str, int], Path]]:
    upstream = FakeUpstream("upstream")
    with serving(upstream.app()) as url:
        ports = {"http": free_port(), "grpc": free_port(), "gateway": free_port()}
        play, cm = local_manifests(tmp_path, url, ports, serve_image)
        start = time.monotonic()
        try:
            podman("kube", "play", "--network=host", "--configmap", str(cm), str(play))
            yield ports, play
            report(f"kube play: router and gateway ready "
                   f"{time.monotonic() - start:.1f} s after kube play (incl. the request)")
        finally:
            logs = podman("pod", "logs", "--tail", "30", "tierwise-gateway-pod", check=False)
            if logs.returncode == 0 and logs.stdout:
                (tmp_path / "gateway.log").write_text(logs.stdout + logs.stderr)
            podman("kube", "down", str(play), check=False)


def wait(url: str, budget: float = 60.0) -> None:
    def pods() -> str:
        return subprocess.run(["podman", "pod", "ps"], capture_output=True, text=True,
                              check=False).stdout

    wait_ready(url, budget, pods)


def test_kube_play_routes_a_chat_through_the_gateway(
        played: tuple[dict[str, int], Path]) -> None:
    ports, _ = played
    wait(f"http://127.0.0.1:{ports['http']}/readyz")
    wait(f"http://127.0.0.1:{ports['gateway']}/readyz")
    status, answer = post(
        f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions",
        {"model": "tierwise-auto",
         "messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]},
        headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert status == 200, answer
    meta = answer["tierwise"]
    assert isinstance(meta, dict)
    assert meta["tier"] in {"weak", "strong"}
