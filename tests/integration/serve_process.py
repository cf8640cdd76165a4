"""``tierwise serve`` as a real child process on loopback ports, for tests that need one."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"http listening on ([\d.]+):(\d+)")


@dataclass
class ServeProcess:
    """A started ``tierwise serve``: its HTTP base URL and every stderr line so far."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    http_url: str = ""

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def model(self) -> dict[str, Any]:
        """``GET /v1/model``."""
        doc: dict[str, Any] = httpx.get(f"{self.http_url}/v1/model", timeout=10).json()
        return doc

    def wait_until(self, check: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
        """Poll ``check`` until it holds; fails the test (with the output) when it never does."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"never saw {what}; serve output:\n{self.output}")


def run_serve(args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``tierwise serve`` to completion (for start-up refusals)."""
    cmd = [sys.executable, "-m", "cli.main", "serve", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@contextmanager
def serving(args: Sequence[str], env: dict[str, str]) -> Iterator[ServeProcess]:
    """Start ``tierwise serve ARGS --http-port 0 --grpc-port 0``; SIGTERM and wait on exit."""
    cmd = [sys.executable, "-m", "cli.main", "serve", *args,
           "--http-port", "0", "--grpc-port", "0"]
    with subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        stderr = proc.stderr
        sp = ServeProcess(proc)
        reader = threading.Thread(target=lambda: sp.lines.extend(iter(stderr.readline, "")))
        reader.start()
        try:
            def listening() -> bool:
                match = next((m for line in list(sp.lines) if (m := LISTENING.search(line))),
                             None)
                if match:
                    sp.http_url = f"http://{match.group(1)}:{match.group(2)}"
                return match is not None

            sp.wait_until(listening, "the HTTP port")
            yield sp
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            reader.join(timeout=5)
    assert code == 0, sp.output
