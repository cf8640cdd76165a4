"""Bundle reading and writing: atomic writes, hash and feature-version checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from router_model.artifact import Manifest, TierSpec, read_bundle, write_bundle
from router_model.errors import ArtifactMismatch
from router_model.features import FEATURE_VERSION, feature_names

ONNX = b"not really onnx, but bytes with a hash"


def _manifest(**over: object) -> Manifest:
    doc: dict[str, object] = dict(
        name="t", feature_version=FEATURE_VERSION, feature_set="hand",
        feature_names=list(feature_names("hand")),
        tiers=[TierSpec(name="weak", model="a", input_price=0.1, output_price=0.1),
               TierSpec(name="strong", model="b", input_price=1, output_price=1)],
        classes=["weak", "strong"], threshold=0.6, calibration="sigmoid", estimator="logreg",
        train_data_sha256="0" * 64, onnx_sha256=hashlib.sha256(ONNX).hexdigest(),
    )
    doc.update(over)
    return Manifest.model_validate(doc)


def test_roundtrip_and_version(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "b", _manifest(), ONNX)
    manifest, data = read_bundle(path)
    assert data == ONNX and manifest.threshold == 0.6
    assert manifest.model_version == f"t:{hashlib.sha256(ONNX).hexdigest()[:12]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp dirs left


def test_overwrite_is_whole(tmp_path: Path) -> None:
    write_bundle(tmp_path / "b", _manifest(), ONNX)
    write_bundle(tmp_path / "b", _manifest(threshold=0.9), ONNX)
    assert read_bundle(tmp_path / "b")[0].threshold == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_mismatches_are_refused(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "b", _manifest(), ONNX)
    (path / "model.onnx").write_bytes(ONNX + b"x")
    with pytest.raises(ArtifactMismatch, match="sha256"):
        read_bundle(path)
    path = write_bundle(tmp_path / "c", _manifest(feature_version=FEATURE_VERSION + 1), ONNX)
    with pytest.raises(ArtifactMismatch, match="feature_version"):
        read_bundle(path)
    path = write_bundle(tmp_path / "d", _manifest(feature_names=["x"]), ONNX)
    with pytest.raises(ArtifactMismatch, match="feature names"):
        read_bundle(path)
    (path / "manifest.json").write_text(json.dumps({"name": 1}))
    with pytest.raises(ArtifactMismatch, match="invalid manifest"):
        read_bundle(path)
    with pytest.raises(ArtifactMismatch, match="not a model bundle"):
        read_bundle(tmp_path / "missing")


def test_write_refuses_wrong_hash(tmp_path: Path) -> None:
    with pytest.raises(ArtifactMismatch):
        write_bundle(tmp_path / "b", _manifest(), ONNX + b"!")
    assert not (tmp_path / "b").exists()
