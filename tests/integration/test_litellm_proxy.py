"""LiteLLM's proxy (``litellm --config``, a real process) with the tierwise hook of docs/litellm.md.

The proxy runs the documented ``config.yaml`` and ``tierwise_hook.py`` (addresses swapped for the
loopback ones), plus a second group whose hook points at a router service that is down.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytest.importorskip("litellm_support")  # sets LiteLLM's offline switch before litellm loads
pytest.importorskip("litellm", reason="the LiteLLM plug-in needs tierwise[litellm]")

from fake_upstream import closed_port  # noqa: E402
from litellm_support import CHATS, GROUP, Upstreams, tier_upstreams  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "data" / "models" / "routellm_fast"
LITELLM = Path(sys.executable).parent / "litellm"
MASTER_KEY = "sk-test-master"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
DOWN_HOOK = """
down_hook = TierwiseProxyHook(TierwiseOptions(
    router="grpc://127.0.0.1:{port}", groups=("down",), fail_open="down-strong", timeout_s=0.2))
"""

pytestmark = pytest.mark.slow


def documented(lang: str, marker: str) -> str:
    """The block of docs/litellm.md in ``lang`` that holds ``marker``."""
    text = (REPO / "docs" / "litellm.md").read_text("utf-8")
    return next(body for kind, body in FENCE.findall(text) if kind == lang and marker in body)


def proxy_config(tmp: Path, ups: Upstreams, grpc_target: str) -> Path:
    hook = documented("python", "TierwiseProxyHook(").replace("127.0.0.1:50051", grpc_target)
    (tmp / "tierwise_hook.py").write_text(hook + DOWN_HOOK.format(port=closed_port()), "utf-8")
    config: dict[str, Any] = yaml.safe_load(documented("yaml", "model_list"))
    for deployment, url in zip(config["model_list"], (ups.weak_url, ups.strong_url), strict=True):
        deployment["litellm_params"]["api_base"] = url
    down = [{**d, "model_name": "down", "model_info": {
        **d["model_info"], "id": d["model_info"]["id"].replace("auto", "down")}}
        for d in config["model_list"]]
    config["model_list"] += down
    config["litellm_settings"]["callbacks"].append("tierwise_hook.down_hook")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config), "utf-8")
    return path


@pytest.fixture(scope="module")
def proxy(run_service: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[str, str, Upstreams]]:
    """(proxy URL, router service HTTP URL, upstreams)."""
    service = run_service(BUNDLE)
    tmp = tmp_path_factory.mktemp("litellm_proxy")
    with tier_upstreams() as ups:
        config = proxy_config(tmp, ups, service.grpc_target)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp),
               "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "DISABLE_SCHEMA_UPDATE": "True"}
        log = (tmp / "proxy.log").open("w")
        with subprocess.Popen(
            [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", "0",
             "--num_workers", "1"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
        ) as proc:
            try:
                yield wait_listening(proc, tmp / "proxy.log"), service.http_url, ups
            finally:
                proc.terminate()
                proc.wait(timeout=20)
                log.close()


def wait_listening(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The URL the proxy listens on (it picks another port when its own is busy: read it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"Uvicorn running on http://[\d.]+:(\d+)", log.read_text("utf-8"))
        if match:
            url = f"http://127.0.0.1:{match.group(1)}"
            try:
                httpx.get(url + "/health/liveliness", timeout=2)
                return url
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise AssertionError("the proxy did not start:\n" + log.read_text("utf-8")[-3000:])


def chat(url: str, model: str, text: str) -> dict[str, Any]:
    response = httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def test_proxy_routes_by_tierwise(proxy: tuple[str, str, Upstreams]) -> None:
    url, router, ups = proxy
    seen = set()
    for text in CHATS:
        expected = httpx.post(router + "/v1/route", timeout=10, json={
            "messages": [{"role": "user", "content": text}]}).json()["tier"]
        ups.clear()
        assert chat(url, GROUP, text)["choices"][0]["message"]["content"]
        assert ups.served_by() == expected
        seen.add(expected)
    assert seen == {"weak", "strong"}


def test_proxy_fails_open_when_the_router_is_down(proxy: tuple[str, str, Upstreams]) -> None:
    url, _, ups = proxy
    for _ in range(3):  # LiteLLM would spread these over both deployments without the hook
        ups.clear()
        start = time.perf_counter()
        chat(url, "down", CHATS[2])
        assert time.perf_counter() - start < 0.2 + 2.0
        assert ups.served_by() == "strong"
