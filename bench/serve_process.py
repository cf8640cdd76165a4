"""``tierwise serve`` as a child process for the benches: started on free ports, stopped cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"(http|grpc) listening on ([\d.]+):(\d+)")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    http: str
    grpc: str


@contextlib.contextmanager
def serving(bundle: Path, log: Path) -> Iterator[Server]:
    """``tierwise serve`` as deployed (decision log on, at INFO), SIGTERM on the way out. Its log
    goes to a file: a pipe read by this (busy) process would block the server's writes."""
    env = {**os.environ, "TIERWISE_LOG_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "cli.main", "serve", "--model", str(bundle),
           "--http-port", "0", "--grpc-port", "0"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=sink)
    ports: dict[str, str] = {}
    deadline = time.monotonic() + 120
    try:
        while len(ports) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tierwise serve did not start; see {log}")
            ports = {m.group(1): f"{m.group(2)}:{m.group(3)}"
                     for m in LISTENING.finditer(log.read_text("utf-8", "replace"))}
            time.sleep(0.05)
        yield Server(proc, f"http://{ports['http']}", ports["grpc"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

