"""Helpers of the deploy tests: podman as it runs on these machines, free ports, image builds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "deploy" / "podman" / "containers.conf"
BASE_IMAGE = os.environ.get("TIERWISE_DEPLOY_BASE", "localhost/tierwise-base:bookworm")
SERVE_IMAGE = "localhost/tierwise:test-deploy"
TRAIN_IMAGE = "localhost/tierwise-train:test-deploy"
INFRA_IMAGE = "localhost/tierwise-infra:test-deploy"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: Measured figures, printed in the session summary (``conftest.pytest_terminal_summary``).
FIGURES: list[str] = []


def report(line: str) -> None:
    """Keep a measured figure for the summary at the end of the run."""
    FIGURES.append(line)


def podman_cmd(*args: str) -> list[str]:
    """A podman command line that works on these machines (runc, cgroupfs, no ulimits)."""
    return ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *args]


def podman(*args: str, check: bool = True,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(podman_cmd(*args), capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {done.returncode}\n"
                             f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_podman() -> None:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc are not installed (apt-get install podman runc debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("the deploy tests run podman rootful (as root, as CI does)")


def build(base: str, tag: str, target: str = "serve") -> float:
    """Build ``target`` of the Containerfile as ``tag``; the seconds it took."""
    args = ["build", "--network=host", "--format", "docker", "--target", target,
            "--build-arg", f"BASE_IMAGE={base}", "-t", tag, "-f", "Containerfile"]
    if HOST_CA.exists():  # pip reaches the index through the host's CA bundle here
        args += ["-v", f"{HOST_CA}:/run/host-ca.pem:ro", "--build-arg", "PIP_CERT=/run/host-ca.pem"]
    start = time.monotonic()
    podman(*args, str(REPO), timeout=1800)
    return time.monotonic() - start


def wait_ready(url: str, budget: float, diagnose: Callable[[], str] = str,
               alive: Callable[[], None] | None = None) -> float:
    """Seconds until ``url`` answers 200, polled every 0.1 s. ``alive`` may raise to stop early
    (a container that exited); past ``budget`` an AssertionError ends with ``diagnose()``."""
    start = time.monotonic()
    while time.monotonic() - start < budget:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return time.monotonic() - start
        except OSError:  # refused, reset, timed out, or an HTTP error status
            pass
        if alive is not None:
            alive()
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready in {budget} s\n{diagnose()}")

