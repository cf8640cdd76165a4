"""The committed gRPC stubs are exactly what ``grpc_tools.protoc`` generates from the proto."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROTO = "protos/tierwise/v1/router.proto"
GENERATED = ("router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py")


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    args = ["protoc", "-I", str(REPO), f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", str(REPO / PROTO)]
    assert protoc.main(args) == 0
    out = tmp_path / "protos" / "tierwise" / "v1"
    for name in GENERATED:
        committed = (REPO / "protos" / "tierwise" / "v1" / name).read_text("utf-8")
        assert (out / name).read_text("utf-8") == committed, (
            f"{name} is stale: python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. "
            f"--grpc_python_out=. {PROTO}"
        )


def test_package_markers_are_empty() -> None:
    for init in ("protos/__init__.py", "protos/tierwise/__init__.py",
                 "protos/tierwise/v1/__init__.py"):
        assert (REPO / init).read_text("utf-8") == ""
