"""Model bundles: a directory with ``model.onnx`` and ``manifest.json``; reading, atomic writing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router_model.errors import ArtifactMismatch
from router_model.features import FEATURE_VERSION, FeatureSet, feature_names
from router_model.tiers import Tier, tiers_from_dicts

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = 1


class TierSpec(BaseModel):
    """A tier as stored in the manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    model: str
    input_price: float = Field(ge=0)
    output_price: float = Field(ge=0)


class LabelRule(BaseModel):
    """How training turned per-tier scores into the cheapest-adequate-tier label."""

    model_config = ConfigDict(frozen=True)
    rule: str = "cheapest_adequate"
    tolerance: float = 0.0
    #: What the classifier was fitted on: ``label`` (every row's cheapest-adequate label) or
    #: ``gain`` (two tiers: rows with every tier scored fitted on which tier scored higher,
    #: weighted by the score gap, ties left out; ``training.pipeline.gain_rows``), calibrated
    #: alike: P(strong) is then the chance the strong tier scores higher where the tiers differ.
    fit: Literal["label", "gain"] = "label"


class Manifest(BaseModel):
    """Everything serving needs to trust and use ``model.onnx``."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())
    schema_version: int = SCHEMA_VERSION
    name: str
    feature_version: int
    feature_set: FeatureSet
    feature_names: list[str]
    tiers: list[TierSpec]
    classes: list[str]
    threshold: float = Field(ge=0, le=1, description="default quality knob")
    calibration: str
    estimator: str
    label_rule: LabelRule = LabelRule()
    metrics: dict[str, Any] = Field(default_factory=dict)
    train_data_sha256: str
    onnx_sha256: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    git_sha: str = "unknown"
    #: Why this bundle should not be trusted as it is (``tierwise train`` writes them; empty when
    #: nothing is wrong), e.g. a held-out APGR interval that includes random routing's 0.5.
    warnings: list[str] = Field(default_factory=list)

    @property
    def model_version(self) -> str:
        """Stable identifier of this exact bundle."""
        return f"{self.name}:{self.onnx_sha256[:12]}"

    def tier_ladder(self) -> tuple[Tier, ...]:
        """The tiers as domain objects, validated."""
        return tiers_from_dicts([t.model_dump() for t in self.tiers], source="manifest")


def check_compatible(manifest: Manifest, *, source: str) -> None:
    """Refuse a bundle built for other feature code.

    Raises:
        ArtifactMismatch: when feature version, feature names or classes do not line up.
    """
    if manifest.feature_version != FEATURE_VERSION:
        raise ArtifactMismatch(
            f"{source}: bundle has feature_version {manifest.feature_version}, "
            f"this code computes version {FEATURE_VERSION}; retrain the bundle"
        )
    if tuple(manifest.feature_names) != feature_names(manifest.feature_set):
        raise ArtifactMismatch(f"{source}: bundle feature names differ from this code's")
    if manifest.classes != [t.name for t in manifest.tiers]:
        raise ArtifactMismatch(f"{source}: classes {manifest.classes} differ from tier names")


def read_bundle(path: Path) -> tuple[Manifest, bytes]:
    """Read and verify a bundle directory; returns the manifest and the ONNX bytes.

    Raises:
        ArtifactMismatch: when a file is missing, unreadable, invalid, or the ONNX hash differs.
    """
    try:
        raw = (path / MANIFEST_FILE).read_text(encoding="utf-8")
        onnx_bytes = (path / MODEL_FILE).read_bytes()
    except OSError as exc:
        raise ArtifactMismatch(
            f"{path}: not a model bundle ({exc.strerror}: {exc.filename})"
        ) from exc
    except ValueError as exc:  # the OS cannot take the name at all (an embedded NUL byte)
        raise ArtifactMismatch(f"{str(path)!r}: not a model bundle ({exc})") from exc
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        # where and what kind, never the input: the file may be anything (a link to a secret)
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['type']}"
                          for e in exc.errors(include_url=False, include_input=False)[:5])
        raise ArtifactMismatch(f"{path}: invalid manifest.json ({where})") from None
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    if digest != manifest.onnx_sha256:
        raise ArtifactMismatch(f"{path}: model.onnx sha256 {digest[:12]} does not match manifest")
    check_compatible(manifest, source=str(path))
    return manifest, onnx_bytes


def write_bundle(path: Path, manifest: Manifest, onnx_bytes: bytes) -> Path:
    """Write a bundle atomically: a sibling temp directory renamed into place.

    Nothing half-written is ever left at ``path``; an existing bundle there is replaced whole.
    """
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise ArtifactMismatch("manifest onnx_sha256 does not match the model bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; a bundle is read by whichever user serves it
    try:
        (tmp / MODEL_FILE).write_bytes(onnx_bytes)
        (tmp / MANIFEST_FILE).write_text(
            json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
        )
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
