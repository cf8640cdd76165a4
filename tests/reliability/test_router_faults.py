"""Router faults: ``tierwise serve`` killed with SIGKILL while the gateway serves through it, and
corrupt or mismatched bundles pushed for reload while clients are routing.

A router stopped cleanly in-process is covered by ``test_gateway_router_modes.py``; a corrupt ONNX
file and a missing directory (one request, no load) by ``test_http_admin.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import HARD
from reliability_servers import REPO, ROUTER_ADMIN_KEY, ServerProcess, start_router

SHIPPED = REPO / "data" / "models" / "routellm_fast"


def gateway_load(
    gw: Any, total: int, on_answer: Any, clients: int = 8
) -> list[tuple[int, str, str, int]]:
    """``total`` auto-routed requests (quality 1: the router would pick strong) from ``clients``
    threads; ``on_answer(n)`` is called after each answer. Returns (status, tier, source,
    failovers)."""
    lock, done = threading.Lock(), [0]
    body = {"model": "tierwise-auto", "messages": [{"role": "user", "content": HARD}],
            "tierwise": {"quality": 1.0}}

    def one(http: httpx.Client, _: int) -> tuple[int, str, str, int]:
        r = http.post("/v1/chat/completions", json=body)
        with lock:
            done[0] += 1
            on_answer(done[0])
        headers = r.headers
        return (r.status_code, headers.get("x-tierwise-tier", ""),
                headers.get("x-tierwise-source", ""), int(headers.get("x-tierwise-failovers", 0)))

    with gw.http() as http, ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda i: one(http, i), range(total)))


@pytest.mark.slow
@pytest.mark.reliability(
    scenario="Router service killed (SIGKILL) under load",
    action="gateway in `router: address:` mode on a `tierwise serve` subprocess; 8 concurrent "
           "clients send 120 requests the router sends to strong; SIGKILL the router after 30",
    expected="every request answered; after the kill the gateway fails open to the default "
             "tier (weak), records say fail_open")
def test_router_sigkill_fails_open(
    make_gateway: Any, fast_bundle: Path, tmp_path: Path, observed: Any
) -> None:
    router = start_router(fast_bundle, dict(os.environ), tmp_path / "router.log")
    try:
        gw = make_gateway(router={"address": router.grpc_target, "timeout_s": 0.5},
                          default_tier="weak")
        killed_at: list[float] = []

        def kill_after_30(n: int) -> None:
            if n == 30:
                killed_at.append(time.monotonic())
                router.kill(signal.SIGKILL)

        start = time.monotonic()
        results = gateway_load(gw, 120, kill_after_30)
    finally:
        code = router.kill(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert all(status == 200 for status, _, _, _ in results)
    # a fail-open request goes to weak; should weak pass its timeout on a loaded machine, it
    # fails over to strong, which the answer says (x-tierwise-failovers)
    assert all((tier, source) == ("strong", "router") or source == "fail_open"
               and (tier == "weak" or tier == "strong" and failovers > 0)
               for _, tier, source, failovers in results), Counter(results)
    counts = Counter(source for _, _, source, _ in results)
    assert counts["router"] >= 30
    assert counts["fail_open"] >= 60
    with gw.http() as http:
        metrics = http.get("/metrics").text
    fail_open = counts["fail_open"]
    assert f"tierwise_gateway_fail_open_total {float(fail_open)}" in metrics
    on_weak = sum(source == "fail_open" and tier == "weak" for _, tier, source, _ in results)
    observed(f"answered {len(results)}/120 in {time.monotonic() - start:.1f} s: "
             f"{counts['router']} routed (strong) then {fail_open} fail-open ({on_weak} answered "
             f"by weak, {fail_open - on_weak} failed over to strong); router exit {code}")


def wait_for(condition: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def bad_bundles(good: Path, tmp: Path) -> dict[str, Path]:
    """Copies of ``good`` broken in different ways (each must be refused)."""
    out: dict[str, Path] = {}

    def variant(name: str, change: Any) -> None:
        dest = tmp / name
        shutil.copytree(good, dest)
        change(dest)
        out[name] = dest

    def manifest_edit(**changes: Any) -> Any:
        def change(dest: Path) -> None:
            doc = json.loads((dest / "manifest.json").read_text("utf-8"))
            doc.update(changes)
            (dest / "manifest.json").write_text(json.dumps(doc), "utf-8")
        return change

    variant("feature version from the future", manifest_edit(feature_version=99))
    names = json.loads((good / "manifest.json").read_text("utf-8"))["feature_names"]
    variant("feature names reordered", manifest_edit(feature_names=names[::-1]))
    variant("manifest not JSON", lambda d: (d / "manifest.json").write_text("{oops", "utf-8"))
    variant("ONNX truncated", lambda d: (d / "model.onnx").write_bytes(
        (d / "model.onnx").read_bytes()[: (d / "model.onnx").stat().st_size // 2]))
    variant("ONNX of another model", lambda d: shutil.copy(SHIPPED / "model.onnx", d))
    variant("manifest missing", lambda d: (d / "manifest.json").unlink())
    out["path with a NUL byte"] = tmp / "bundle\0"  # schemathesis found this one (was a 500)
    return out


@pytest.mark.reliability(
    scenario="Corrupt or mismatched bundle pushed for reload",
    action="POST /v1/admin/reload of 7 broken bundles (future feature version, reordered "
           "feature names, manifest not JSON, truncated ONNX, another model's ONNX, no manifest, "
           "a path with a NUL byte) to tierwise serve while 4 clients keep routing",
    expected="each reload refused with 409; every route answered 200 by the old model")
def test_bad_reloads_under_load(
    router_process: ServerProcess, fast_bundle: Path, tmp_path: Path, observed: Any
) -> None:
    bundles = bad_bundles(fast_bundle, tmp_path)
    auth = {"authorization": f"Bearer {ROUTER_ADMIN_KEY}"}
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: set[str] = set()

    def route() -> None:
        with httpx.Client(base_url=router_process.http_url, timeout=10) as http:
            while not stop.is_set():
                r = http.post("/v1/route", json={"prompt": "Summarise the water cycle."})
                statuses[r.status_code] += 1
                versions.add(r.json().get("model_version", "?"))

    with httpx.Client(base_url=router_process.http_url, timeout=30) as admin:
        before = admin.get("/v1/model").json()["model_version"]
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(route)
            wait_for(lambda: statuses.total() >= 8)
            refused, seen = {}, statuses.total()
            for name, path in bundles.items():
                r = admin.post("/v1/admin/reload", json={"path": str(path)}, headers=auth)
                refused[name] = (r.status_code, r.json().get("code"))
            wait_for(lambda: statuses.total() >= seen + 8)
            stop.set()
        after = admin.get("/v1/model").json()["model_version"]
    assert refused == {name: (409, "artifact_mismatch") for name in bundles}, refused
    assert after == before and versions == {before}
    assert set(statuses) == {200} and statuses[200] > 0
    observed(f"{len(refused)}/{len(bundles)} reloads refused 409 artifact_mismatch; "
             f"{statuses[200]} routes during them, all 200 from {before}")
