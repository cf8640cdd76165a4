"""``tierwise serve`` as a real process: both transports answer, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from cli.main import registry_client
from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from router_model.settings import ServiceSettings
from service.router.core import RouteService
from service.router.main import main, resolve_model

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"(http|grpc) listening on ([\d.]+):(\d+)")


def test_serve_answers_both_transports_and_stops_on_sigterm(
    fast_bundle: Path, prompts: list[str]
) -> None:
    env = {**os.environ, "TIERWISE_LOG_FORMAT": "json", "TIERWISE_SERVICE__GRACE_SECONDS": "1"}
    cmd = [sys.executable, "-m", "cli.main", "serve", "--model", str(fast_bundle),
           "--http-port", "0", "--grpc-port", "0"]
    lines: list[str] = []
    ports: dict[str, str] = {}
    with subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        stderr = proc.stderr
        reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")))
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while len(ports) < 2 and time.monotonic() < deadline and proc.poll() is None:
                for line in list(lines):
                    if m := LISTENING.search(line):
                        ports[m.group(1)] = f"{m.group(2)}:{m.group(3)}"
                time.sleep(0.05)
            assert len(ports) == 2, "".join(lines)
            http = httpx.post(f"http://{ports['http']}/v1/route", json={"prompt": prompts[0]})
            assert http.status_code == 200
            with grpc.insecure_channel(ports["grpc"]) as channel:
                reply = router_pb2_grpc.RouterStub(channel).Route(
                    pb.RouteRequest(prompt=prompts[0]), timeout=10
                )
            assert reply.tier == http.json()["tier"]
            assert dict(reply.probabilities) == http.json()["probabilities"]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            reader.join(timeout=5)
    assert code == 0, "".join(lines)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    decisions = [r for r in records if "request_id" in r]
    assert [d["transport"] for d in decisions] == ["http", "grpc"]
    assert all(prompts[0][:30] not in line for line in lines)
    assert any(r["msg"] == "stopped" for r in records)


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    """``main`` configures the root logger; put pytest's set-up back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_main_refuses_a_missing_bundle(tmp_path: Path) -> None:
    assert main(["--model", str(tmp_path / "nope"), "--http-port", "0", "--grpc-port", "0"]) == 2


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port"])
def test_main_refuses_a_busy_port(fast_bundle: Path, flag: str) -> None:
    ports = {"--http-port": "0", "--grpc-port": "0"}
    with socket.create_server(("127.0.0.1", 0)) as busy:
        ports[flag] = str(busy.getsockname()[1])
        args = ["--model", str(fast_bundle), *(x for kv in ports.items() for x in kv)]
        assert main(args) == 1


def test_main_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--http-port", "nope"])
    assert "--http-port" in capsys.readouterr().err


@pytest.mark.slow
def test_a_registry_uri_is_materialised_then_served(fast_bundle: Path, tmp_path: Path) -> None:
    registry = pytest.importorskip("training.registry")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    registry.log_and_register(uri, name="tiny", bundle_dir=fast_bundle, params={}, metrics={},
                              alias="champion")
    path = resolve_model("models:/tiny@champion", uri, registry_client)
    assert path != fast_bundle and (path / "manifest.json").exists()
    served = RouteService.from_path(ServiceSettings(), path).manifest
    assert served.onnx_sha256 == json.loads(
        (fast_bundle / "manifest.json").read_text("utf-8"))["onnx_sha256"]
