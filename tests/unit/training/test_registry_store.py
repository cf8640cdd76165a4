"""A missing or unreachable MLflow store is reported as such, quickly and without creating it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from router_model.errors import NotFound
from training import registry
from training.retrain import main as retrain_main


def _free_port() -> int:
    with socket.socket() as sock:  # bound then closed: nothing listens there afterwards
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_missing_sqlite_store_is_not_created(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}"
    with pytest.raises(NotFound, match="no such file"):
        registry.materialize(uri, "models:/x@champion", tmp_path / "dest")
    assert retrain_main(["--db", f"sqlite:///{tmp_path / 't.db'}", "--name", "x", "--out",
                         str(tmp_path / "out"), "--tracking-uri", uri,
                         "--base-data", "x.jsonl"]) == 2
    assert not (tmp_path / "nope").exists() and not (tmp_path / "out").exists()


def test_unreachable_server_is_reported_quickly(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(NotFound, match="unreachable"):
        registry.materialize(uri, "models:/x@champion", tmp_path / "dest")
    assert retrain_main(["--db", f"sqlite:///{tmp_path / 't.db'}", "--name", "x", "--out",
                         str(tmp_path / "out"), "--tracking-uri", uri,
                         "--base-data", "x.jsonl"]) == 2
    assert time.monotonic() - start < 2 * registry.PROBE_TIMEOUT_S


def test_a_store_found_there_is_returned_checked(tmp_path: Path) -> None:
    # what retrain probes once and hands to registry.download instead of probing again
    (tmp_path / "mlflow.db").touch()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert registry.check_store(uri) == registry.CheckedStore(uri)
