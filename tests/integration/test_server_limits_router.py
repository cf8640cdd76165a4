"""The router's own server limits (``ServerLimits`` in ``ServiceSettings.server``): idle
connections to its gRPC port are closed after the handshake deadline."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import grpc

from protos.tierwise.v1 import router_pb2 as pb
from protos.tierwise.v1 import router_pb2_grpc
from router_model.settings import ServerLimits


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server closed ``s`` (what it sent first, its HTTP/2 settings, is skipped)."""
    s.settimeout(0.05)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_idle_grpc_connections_are_closed(run_service: Any, fast_bundle: Path) -> None:
    st = run_service(fast_bundle, server=ServerLimits(header_timeout_s=1.0))
    host, port = st.grpc_target.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
    with grpc.insecure_channel(st.grpc_target) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        assert stub.Route(pb.RouteRequest(prompt="hi"), timeout=10).decision_id
        time.sleep(3.0)
        closed = sum(_closed_by_server(s) for s in idle)
        assert closed == len(idle), f"{closed}/{len(idle)} closed"
        assert stub.Route(pb.RouteRequest(prompt="hi"), timeout=10).decision_id
    for s in idle:
        s.close()
