"""The router following a registry alias in the Compose stack, as a team runs it: MLflow's
tracking server (the train image, as ``deploy/compose.yaml`` runs it), the router serving
``models:/NAME@champion`` from it (the train image: the registry client needs MLflow), PostgreSQL
and both gateway replicas routing through that router. Moving the alias in the MLflow server
reaches both replicas. The stack is ``deploy/compose.yaml`` rewritten as in
``test_compose_stack.py`` (``compose_support``), without HAProxy and Prometheus.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from compose_support import (
    READY_S,
    Stack,
    bring_up,
    chat,
    client,
    compose,
    stack_doc,
    write_stack,
)
from deploy_support import REPO, free_port, report, wait_ready

from training import registry

NAME = "tierwise-compose"
FIRST = REPO / "data" / "models" / "routellm_fast"
SECOND = REPO / "data" / "models" / "routellm"


def versions(stack: Stack) -> dict[str, str]:
    """The model version each gateway replica's next routed request is recorded with."""
    out = {}
    for name in ("gateway-1", "gateway-2"):
        with client(stack.url(name)) as http:
            answer = chat(http, f"Which planet is the largest? ({uuid.uuid4().hex[:6]})")
        assert answer.status_code == 200, answer.text
        decision = answer.headers["x-tierwise-decision-id"]
        rows = stack.sql(f"SELECT coalesce(model_version, '') FROM traffic "
                         f"WHERE decision_id = '{decision}'")
        out[name] = rows[0][0] if rows else ""
    return out


def until(check: str, want: Callable[[dict[str, str]], bool], stack: Stack,
          limit_s: float = 120) -> dict[str, str]:
    """``versions`` once ``want`` holds for them (polled every second)."""
    deadline = time.monotonic() + limit_s
    while True:
        seen = versions(stack)
        if want(seen):
            return seen
        assert time.monotonic() < deadline, f"{check}: {seen}"
        time.sleep(1)


def test_moving_the_champion_alias_reaches_both_gateway_replicas(
    serve_image: str, infra_image: str, train_image: str, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("gateway-1", "gateway-2", "mlflow")}
    doc = stack_doc(tmp_path, {"serve": serve_image, "infra": infra_image, "train": train_image},
                    ports)
    services = doc["services"]
    for name in ("haproxy", "prometheus"):
        del services[name]
    router = services["router"]
    router.update(image=train_image, command=["serve", "--model", f"models:/{NAME}@champion"],
                  depends_on=["mlflow"])
    router["environment"] = {**router["environment"], "TIERWISE_SERVICE__WATCH_INTERVAL_S": "1"}
    path = write_stack(tmp_path, doc)
    stack = Stack(f"tw{uuid.uuid4().hex[:8]}", ports)
    tracking = stack.url("mlflow")
    try:
        bring_up(stack, path, services=("mlflow",), ready=())
        wait_ready(tracking + "/health", READY_S)
        registry.log_and_register(tracking, name=NAME, bundle_dir=FIRST, params={}, metrics={},
                                  alias="champion")
        bring_up(stack, path)
        first = until("both replicas route with version 1", lambda seen: all(seen.values())
                      and len(set(seen.values())) == 1, stack)
        start = time.monotonic()
        registry.log_and_register(tracking, name=NAME, bundle_dir=SECOND, params={},
                                  metrics={}, alias="champion")
        second = until("both replicas route with version 2", lambda seen: all(
            v and v != first["gateway-1"] for v in seen.values()), stack)
        moved = time.monotonic() - start
    finally:
        compose(stack.project, "-f", str(path), "down", "-v")
    assert len(set(second.values())) == 1
    report(f"compose: champion alias moved in MLflow ({first['gateway-1']} -> "
           f"{second['gateway-1']}): both gateway replicas routed with it {moved:.1f} s later")
