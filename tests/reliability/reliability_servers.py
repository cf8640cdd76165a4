"""``tierwise serve`` and ``tierwise gateway`` as real subprocesses on loopback, logs to a file.

Logs go to a file, not a pipe: a pipe nobody drains fills up and stalls the server's writes. The
ports are read from the servers' own "listening on" log lines (they bind port 0).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROUTER_ADMIN_KEY = "rel-router-admin-SECRET-5150"
LISTENING = re.compile(r"(http|grpc|gateway) listening on (?:http://)?([\d.]+):(\d+)")


@dataclass
class ServerProcess:
    """A started server subprocess, its ports by transport and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int]

    @property
    def http_url(self) -> str:
        port = self.ports.get("http") or self.ports["gateway"]
        return f"http://127.0.0.1:{port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def logs(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status."""
        if self.alive():
            self.proc.send_signal(sig)
        return self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)


def start_process(
    args: list[str], env: dict[str, str], log: Path, want: set[str], ready: str | None = None
) -> ServerProcess:
    """Run ``python -m cli.main ARGS``; return once every port in ``want`` is logged
    (and the line ``ready``, if given).

    Raises:
        RuntimeError: when the process exits or does not get there within 60 s.
    """
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=REPO,
                            env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    server = ServerProcess(proc, log, {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = server.logs()
        server.ports = {m.group(1): int(m.group(3)) for m in LISTENING.finditer(text)}
        if want <= server.ports.keys() and (ready is None or ready in text):
            return server
        if not server.alive():
            raise RuntimeError(f"{args[0]} exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"{args[0]} did not start:\n{server.logs()[-3000:]}")


def start_router(bundle: Path, env: dict[str, str], log: Path) -> ServerProcess:
    """``tierwise serve`` on free HTTP and gRPC ports."""
    args = ["serve", "--model", str(bundle), "--http-port", "0", "--grpc-port", "0"]
    return start_process(args, env, log, {"http", "grpc"})


def start_gateway_process(config: Path, env: dict[str, str], log: Path) -> ServerProcess:
    """``tierwise gateway`` on a free port, returned once its app has started."""
    args = ["gateway", "--config", str(config), "--port", "0"]
    return start_process(args, env, log, {"gateway"}, ready="Application startup complete")
