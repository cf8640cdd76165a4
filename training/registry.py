"""The MLflow model registry: the only module that imports mlflow.

A bundle directory (``model.onnx`` + ``manifest.json``) is logged as the run's ``bundle`` artifact
folder and registered as a model version whose source is that folder, so that
``models:/<name>@champion`` downloads a ready bundle. (MLflow's ONNX flavor would need the manifest
as a side file and pandas at load time; a plain artifact folder serves every use here.) Promotion
uses aliases (``challenger``, ``champion``), never stages.
"""

from __future__ import annotations

import logging
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_model.errors import ArtifactMismatch, NotFound
from router_model.settings import quiet_third_party_env

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class RunRecord:
    """What one logged and registered training run produced."""

    run_id: str
    name: str
    version: str
    model_uri: str


#: Seconds a tracking server gets to answer the reachability probe of ``check_store``.
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CheckedStore:
    """A tracking store ``check_store`` found there: a job that reads it several times probes
    it once and passes this along (``download``)."""

    tracking_uri: str


def check_store(tracking_uri: str) -> CheckedStore:
    """Refuse a tracking store that is not there before reading from it; the store, checked.

    MLflow would create a missing SQLite file (and its folders) and then report an empty
    registry, and would retry an unreachable server for minutes; a read must say which it is.
    Only the ``sqlite:///`` and ``http(s)://`` schemes are checked.

    Raises:
        NotFound: a SQLite store whose file does not exist (nothing is created), or a tracking
            server that does not answer within ``PROBE_TIMEOUT_S`` (any HTTP answer counts).
    """
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise NotFound(f"MLflow store {tracking_uri}: no such file ({path}); nothing created")
    elif tracking_uri.startswith(("http://", "https://")):
        probe = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(probe, timeout=PROBE_TIMEOUT_S):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: reachable, whatever the status
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotFound(
                f"MLflow tracking server {tracking_uri} is unreachable ({reason})"
            ) from exc
    return CheckedStore(tracking_uri)


def _mlflow(tracking_uri: str) -> Any:
    quiet_third_party_env()
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow


def _flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        # MLflow accepts alphanumerics, _ - . space : / in metric names
        name = re.sub(r"[^A-Za-z0-9_\-. :/]", "_", f"{prefix}{key}")
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[name] = float(value)
        elif isinstance(value, Mapping):
            out.update(_flat_metrics(value, f"{name}."))
    return out


def log_and_register(
    tracking_uri: str,
    *,
    name: str,
    bundle_dir: Path,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    plots: tuple[Path, ...] = (),
    alias: str | None = None,
) -> RunRecord:
    """Log a training run (params, metrics, plots, bundle) and register the bundle as a version."""
    mlflow = _mlflow(tracking_uri)
    experiment = f"tierwise-{name}"
    if tracking_uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(experiment) is None:
        # MLflow would put a SQLite store's artifacts under ./mlruns of whatever folder the
        # command ran in; keep them beside the database instead
        root = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlruns"
        mlflow.create_experiment(experiment, artifact_location=root.as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"train-{name}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(_flat_metrics(metrics))
        for plot in plots:
            mlflow.log_artifact(str(plot), artifact_path="plots")
        mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
        source = f"{run.info.artifact_uri}/bundle"
    client = mlflow.MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name=name, source=source, run_id=run.info.run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    logger.info("registered %s version %s (run %s)", name, version.version, run.info.run_id)
    return RunRecord(
        run.info.run_id, name, str(version.version), f"models:/{name}/{version.version}"
    )


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    """Point ``alias`` (e.g. ``champion``) at a registered version."""
    _mlflow(tracking_uri).MlflowClient().set_registered_model_alias(name, alias, version)


def alias_version(tracking_uri: str, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    mlflow = _mlflow(tracking_uri)
    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return str(mv.version)


def materialize(tracking_uri: str, model_uri: str, dest: Path | None = None) -> Path:
    """Download ``models:/<name>@<alias>`` (or any models:/ URI) into a local bundle directory.

    Raises:
        NotFound: when the store is missing or unreachable (``check_store``), or the registry
            has no such model, version or alias.
        ArtifactMismatch: when what was downloaded is not a bundle.
    """
    return download(check_store(tracking_uri), model_uri, dest)


def download(store: CheckedStore, model_uri: str, dest: Path | None = None) -> Path:
    """``materialize`` from a store already probed by ``check_store`` (no second probe).

    Raises:
        NotFound: when the registry has no such model, version or alias.
        ArtifactMismatch: when what was downloaded is not a bundle.
    """
    tracking_uri = store.tracking_uri
    mlflow = _mlflow(tracking_uri)
    target = dest or Path(tempfile.mkdtemp(prefix="tierwise-bundle-"))
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))
    except mlflow.exceptions.MlflowException as exc:
        raise NotFound(
            f"{model_uri}: not in the registry at {tracking_uri} ({exc.message})"
        ) from exc
    path = Path(local)
    if not (path / "manifest.json").exists():
        raise ArtifactMismatch(f"{model_uri}: downloaded files are not a tierwise bundle")
    return path
