"""The PostgreSQL traffic store unreachable while the gateway serves, then reachable again.

The gateway reaches PostgreSQL through a TCP relay on loopback, which the test cuts (every
connection reset, new ones refused) and later restores. Needs TIERWISE_TEST_POSTGRES_URL (CI
starts a server); skipped without it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from gateway_support import EASY


class Relay:
    """A TCP relay 127.0.0.1:port -> target that can be cut and restored on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._accepting()

    def _accepting(self) -> None:
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self._accepting()


@pytest.fixture()
def relay(postgres_url: str) -> Iterator[tuple[Relay, str]]:
    parts = urlsplit(postgres_url)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    yield relay, parts._replace(netloc=f"{user}127.0.0.1:{relay.port}").geturl()
    relay.cut()


@pytest.mark.reliability(
    scenario="Traffic database unreachable at run time (PostgreSQL)",
    action="gateway on PostgreSQL through a TCP relay; 1 request, then the relay is cut "
           "(connections reset, new ones refused) for 3 requests, then restored for 3 more",
    expected="all 7 answered; the 3 records made while it was down are lost and counted in "
             "tierwise_gateway_traffic_write_errors_total; recording resumes once it is back")
def test_postgres_outage(
    make_gateway: Any, fast_bundle: Path, relay: tuple[Relay, str], postgres_url: str,
    observed: Any,
) -> None:
    proxy, url = relay
    gw = make_gateway(fast_bundle, traffic={"url": url, "store_prompts": False})
    body = {"model": "tierwise-auto", "messages": [{"role": "user", "content": EASY}]}
    with gw.http() as http:
        first = http.post("/v1/chat/completions", json=body)
        proxy.cut()
        down = [http.post("/v1/chat/completions", json=body) for _ in range(3)]
        proxy.restore()
        back = [http.post("/v1/chat/completions", json=body) for _ in range(3)]
        metrics = http.get("/metrics").text
    answered = [first, *down, *back]
    assert [r.status_code for r in answered] == [200] * 7
    with psycopg.connect(postgres_url) as conn:
        stored = {r[0] for r in conn.execute("SELECT decision_id FROM traffic")}
    ids = [r.headers["x-tierwise-decision-id"] for r in answered]
    recorded_back = sum(i in stored for i in ids[4:])
    observed(f"7/7 answered; recorded: before 1/1, while down {sum(i in stored for i in ids[1:4])}"
             f"/3, after restore {recorded_back}/3; write errors counted "
             f"{_errors(metrics):.0f}")
    assert ids[0] in stored and not stored & set(ids[1:4])
    assert _errors(metrics) == 3
    assert recorded_back == 3, "recording did not resume after PostgreSQL came back"


def _errors(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("tierwise_gateway_traffic_write_errors_total "):
            return float(line.split()[1])
    return 0.0
