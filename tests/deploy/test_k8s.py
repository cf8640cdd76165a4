"""The Kubernetes manifests: rendered with ``kubectl kustomize`` and checked kind by kind.

``podman kube play`` runs Deployments but ignores Services, PodDisruptionBudgets, autoscalers and
CronJobs, so those are checked here for the fields a cluster needs; the played run is in
``test_kube_play.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from typing import Any

import pytest
import yaml
from deploy_support import REPO

K8S = REPO / "deploy" / "k8s"
Manifest = dict[str, Any]


def render(tree: str) -> list[Manifest]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    done = subprocess.run(["kubectl", "kustomize", str(K8S / tree)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(doc: Manifest) -> Manifest:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def check_container_hardening(spec: Manifest, name: str) -> None:
    assert spec["securityContext"]["runAsNonRoot"] is True, name
    assert spec["securityContext"]["runAsUser"] != 0, name
    for c in spec["containers"]:
        res = c["resources"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res[part]), f"{name}/{c['name']} {part}"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        assert "/var/lib/tierwise" in mounts, f"{name}: no writable state volume"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return render("base")


def test_base_has_every_kind(base: list[Manifest]) -> None:
    kinds = Counter(d["kind"] for d in base)
    assert kinds == Counter({"Deployment": 2, "Service": 2, "PodDisruptionBudget": 2,
                             "HorizontalPodAutoscaler": 1, "CronJob": 1, "ConfigMap": 1,
                             "Secret": 1})


def test_deployments_have_probes_resources_and_run_hardened(base: list[Manifest]) -> None:
    deployments = by_kind(base, "Deployment")
    assert set(deployments) == {"tierwise-router", "tierwise-gateway"}
    for name, doc in deployments.items():
        spec = doc["spec"]
        assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
        check_container_hardening(pod_spec(doc), name)
        container = pod_spec(doc)["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert "livenessProbe" in container, name
        ports = {p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            target = container[probe].get("httpGet") or container[probe].get("grpc")
            assert target["port"] in ports, f"{name} {probe} port {target['port']}"
    router = pod_spec(deployments["tierwise-router"])["containers"][0]
    assert router["args"] == ["serve"]
    assert router["livenessProbe"]["grpc"]["port"] == 50051  # the gRPC health service
    gateway = pod_spec(deployments["tierwise-gateway"])["containers"][0]
    assert gateway["args"][0] == "gateway"


def test_gateway_config_and_keys_are_mounted(base: list[Manifest]) -> None:
    config = next(iter(by_kind(base, "ConfigMap").values()))
    secret = next(iter(by_kind(base, "Secret").values()))
    gateway = pod_spec(by_kind(base, "Deployment")["tierwise-gateway"])
    volumes = {v["name"]: v for v in gateway["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    container = gateway["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"][-1] == f"{mount['mountPath']}/gateway.yaml"
    assert "gateway.yaml" in config["data"]
    assert container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    # the config is valid for the gateway, and every upstream key it names is in the Secret
    gateway_config = yaml.safe_load(config["data"]["gateway.yaml"])
    envs = {t["api_key_env"] for t in gateway_config["tiers"]}
    assert envs | {"TIERWISE_API_KEYS"} <= set(secret["data"])
    services = by_kind(base, "Service")
    host, port = gateway_config["router"]["address"].split(":")
    assert host in services
    assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}


def test_services_pdbs_and_hpa_point_at_real_pods(base: list[Manifest]) -> None:
    deployments = by_kind(base, "Deployment")
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for kind in ("Service", "PodDisruptionBudget"):
        for name, doc in by_kind(base, kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matched = [labels for labels in pod_labels if selects(selector, labels)]
            assert len(matched) == 1, f"{kind} {name} selects {len(matched)} Deployments"
    for name, pdb in by_kind(base, "PodDisruptionBudget").items():
        target = next(d for d in deployments.values() if selects(
            pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]))
        assert pdb["spec"]["minAvailable"] < target["spec"]["replicas"], name
    for name, svc in by_kind(base, "Service").items():
        target = next(d for d in deployments.values() if selects(
            svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]))
        names = {p["name"] for p in pod_spec(target)["containers"][0]["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names, name
    hpa = by_kind(base, "HorizontalPodAutoscaler")["tierwise-gateway"]
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    assert ref["name"] in deployments
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    resources = pod_spec(deployments[ref["name"]])["containers"][0]["resources"]
    assert "cpu" in resources["requests"]  # a CPU utilisation target needs a CPU request


def test_retrain_cronjob(base: list[Manifest]) -> None:
    cron = by_kind(base, "CronJob")["tierwise-retrain"]
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = pod_spec(cron)
    assert spec["restartPolicy"] in {"Never", "OnFailure"}
    check_container_hardening(spec, "tierwise-retrain")
    container = spec["containers"][0]
    assert "tierwise-train" in container["image"]  # the image with the [train] extra
    args = container["args"]
    assert args[0] == "retrain"
    for flag in ("--db", "--name", "--out"):  # retrain's required arguments
        assert flag in args
    assert args[args.index("--out") + 1].startswith("/var/lib/tierwise")
    # the recipe's labeled base data are made first, into the same state volume
    init = spec["initContainers"][0]
    assert init["args"] == ["convert"] and init["image"] == container["image"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["name"] for m in init["volumeMounts"]} >= {"state"}


@pytest.mark.parametrize("overlay", ["production", "local"])
def test_overlays_render(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"tierwise-router", "tierwise-gateway"}
    images = {c["image"] for d in deployments.values() for c in pod_spec(d)["containers"]}
    assert all(":" in image and not image.endswith(":latest") for image in images), images
