"""``tierwise serve --model models:/NAME@champion`` follows the alias: a promoted version is served
without a restart, a bad one is refused while the old keeps serving, a missing champion is a clear
start-up error. Real child process, real MLflow registry on a temp SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path

import httpx
import pytest
from fake_upstream import closed_port
from gateway_support import child_env_fixture  # noqa: F401  (fixture)
from serve_process import run_serve, serving

from router_model.artifact import read_bundle
from router_model.settings import ServiceSettings
from service.router.core import RouteService
from service.router.registry_watch import DEFAULT_POLL_S, RegistryRef, RegistryWatch, poll_interval
from training import registry

NAME = "tiny_fast"


def _copy(bundle: Path, dest: Path, *, name: str | None = None, corrupt: bool = False,
          tier_names: list[str] | None = None) -> Path:
    shutil.copytree(bundle, dest)
    manifest = json.loads((dest / "manifest.json").read_text("utf-8"))
    if name is not None:  # another bundle identity (model_version is name:onnx sha)
        manifest["name"] = name
    if tier_names is not None:  # a valid bundle for another tier ladder
        for tier, tier_name in zip(manifest["tiers"], tier_names, strict=True):
            tier["name"] = tier_name
        manifest["classes"] = tier_names
    (dest / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    if corrupt:  # the registry holds it, but it is not a servable bundle
        (dest / "model.onnx").write_bytes(b"not onnx")
    return dest


def _env(child_env: dict[str, str], uri: str, interval: str) -> dict[str, str]:
    return {**child_env, "TIERWISE_TRAINING__MLFLOW_TRACKING_URI": uri,
            "TIERWISE_SERVICE__WATCH_INTERVAL_S": interval, "TIERWISE_SERVICE__GRACE_SECONDS": "1"}


def _promote(uri: str, bundle: Path) -> str:
    """Register ``bundle`` and move ``champion`` to it, as ``tierwise retrain`` promotes."""
    rec = registry.log_and_register(uri, name=NAME, bundle_dir=bundle, params={}, metrics={},
                                    alias=registry.CHALLENGER)
    registry.set_alias(uri, NAME, registry.CHAMPION, rec.version)
    return rec.version


def test_refs_and_the_poll_interval() -> None:
    assert RegistryRef.parse("data/models/x") is None
    assert RegistryRef.parse("models:/r@champion") == RegistryRef("r", "champion")
    assert RegistryRef.parse("models:/r/3") == RegistryRef("r", None)
    assert RegistryRef("r", "champion").version_uri("4") == "models:/r/4"
    assert poll_interval(ServiceSettings()) == DEFAULT_POLL_S  # an alias is followed by default
    assert poll_interval(ServiceSettings(watch_interval_s=0)) == 0  # explicitly off
    assert poll_interval(ServiceSettings(watch_interval_s=2.5)) == 2.5


@pytest.mark.slow
def test_serve_follows_the_champion_alias(
    fast_bundle: Path, tmp_path: Path, child_env: dict[str, str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.log_and_register(uri, name=NAME, bundle_dir=fast_bundle, params={}, metrics={},
                              alias=registry.CHAMPION)
    bad = _copy(fast_bundle, tmp_path / "bad", corrupt=True)
    good = _copy(fast_bundle, tmp_path / "good", name="tiny_fast_retrained")
    first = read_bundle(fast_bundle)[0].model_version
    second = read_bundle(good)[0].model_version
    assert first != second

    with serving(["--model", f"models:/{NAME}@champion"], _env(child_env, uri, "0.2")) as sp:
        assert sp.model()["model_version"] == first
        pid = sp.proc.pid

        assert _promote(uri, bad) == "2"
        sp.wait_until(lambda: "version 2 refused" in sp.output, "the bad version refused")
        assert sp.model()["model_version"] == first  # the old one keeps serving
        metrics = httpx.get(f"{sp.http_url}/metrics", timeout=10).text
        assert 'tierwise_reloads_total{outcome="refused"} 1.0' in metrics

        assert _promote(uri, good) == "3"
        sp.wait_until(lambda: sp.model()["model_version"] == second, "the new champion served")
        decision = httpx.post(f"{sp.http_url}/v1/route", json={"prompt": "What is 2 + 2?"},
                              timeout=10).json()
        assert decision["model_version"] == second
        assert sp.proc.pid == pid and sp.proc.poll() is None  # same process, no restart
    assert "moved from version 1 to 3" in sp.output  # from the served one


@pytest.mark.slow
def test_serve_without_following_keeps_its_version(
    fast_bundle: Path, tmp_path: Path, child_env: dict[str, str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.log_and_register(uri, name=NAME, bundle_dir=fast_bundle, params={}, metrics={},
                              alias=registry.CHAMPION)
    good = _copy(fast_bundle, tmp_path / "good", name="tiny_fast_retrained")
    # a pinned version never moves, whatever the alias does
    with serving(["--model", f"models:/{NAME}/1"], _env(child_env, uri, "0.2")) as sp:
        _promote(uri, good)
        # the served bundle stays the pinned one, and nothing polls the registry
        assert sp.model()["model_version"] == read_bundle(fast_bundle)[0].model_version
    assert "following" not in sp.output and "moved from" not in sp.output


def test_a_registry_without_champion_is_a_clear_start_up_error(
    fast_bundle: Path, tmp_path: Path, child_env: dict[str, str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.log_and_register(uri, name=NAME, bundle_dir=fast_bundle, params={}, metrics={})
    done = run_serve(["--model", f"models:/{NAME}@champion", "--http-port", "0",
                      "--grpc-port", "0"], _env(child_env, uri, "0.2"))
    assert done.returncode == 2, done.stderr
    assert f"models:/{NAME}@champion: no such model or alias" in done.stderr
    assert registry.alias_version(uri, NAME, registry.CHAMPION) is None  # nothing changed


@pytest.mark.parametrize("store", ["missing", "unreachable"])
def test_an_alias_in_a_registry_that_is_not_there_is_a_clear_start_up_error(
    tmp_path: Path, child_env: dict[str, str], store: str
) -> None:
    """The alias path probes the store as a pinned version does: nothing created, no retries."""
    db = tmp_path / "nowhere" / "mlflow.db"
    uri = f"sqlite:///{db}" if store == "missing" else f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    done = run_serve(["--model", f"models:/{NAME}@champion", "--http-port", "0",
                      "--grpc-port", "0"], _env(child_env, uri, "0.2"))
    assert done.returncode == 2, done.stderr
    if store == "missing":
        assert "no such file" in done.stderr and "nothing created" in done.stderr
        assert not db.parent.exists()
    else:
        assert "unreachable" in done.stderr
        assert time.monotonic() - start < 60  # MLflow alone retries for minutes


def _watched_service(fast_bundle: Path, tmp_path: Path) -> tuple[str, RegistryWatch, RouteService]:
    """A store whose champion (version 1) is ``fast_bundle``, a watch on it, what it serves."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.log_and_register(uri, name=NAME, bundle_dir=fast_bundle, params={}, metrics={},
                              alias=registry.CHAMPION)
    watch = RegistryWatch(registry, uri, RegistryRef(NAME, registry.CHAMPION), tmp_path / "w",
                          interval_s=1.0)
    return uri, watch, RouteService.from_path(ServiceSettings(), watch.fetch_initial())


@pytest.mark.slow
def test_a_vanished_alias_or_refused_version_keeps_the_served_one(
    fast_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mlflow = pytest.importorskip("mlflow")
    uri, watch, service = _watched_service(fast_bundle, tmp_path)
    first = service.manifest.model_version

    async def scenario() -> list[bool]:
        moved = []
        mlflow.MlflowClient(uri).delete_registered_model_alias(NAME, registry.CHAMPION)
        moved.append(await watch.poll(service))  # alias gone: nothing to load
        moved.append(await watch.poll(service))  # ... logged once only
        _promote(uri, _copy(fast_bundle, tmp_path / "bad", corrupt=True))  # version 2
        moved.append(await watch.poll(service))  # refused
        moved.append(await watch.poll(service))  # not fetched again
        registry.set_alias(uri, NAME, registry.CHAMPION, "1")  # back to the served version:
        moved.append(await watch.poll(service))  # nothing to download or reload
        await service.aclose()
        return moved

    with caplog.at_level(logging.WARNING, logger="service.router.registry_watch"):
        assert asyncio.run(scenario()) == [False] * 5
    assert service.manifest.model_version == first and watch.version == "1"
    assert caplog.text.count("alias not found") == 1
    assert caplog.text.count("version 2 refused") == 1
    scraped = service.metrics.render().decode()
    assert 'tierwise_reloads_total{outcome="refused"} 1.0' in scraped
    assert 'outcome="ok"' not in scraped  # never reloaded, not even the same version again
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["v1"]  # refused download removed
    watch.close()
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_champion_with_other_tiers_is_refused(
    fast_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri, watch, service = _watched_service(fast_bundle, tmp_path)
    first, tiers = service.manifest.model_version, service.tiers
    other = _copy(fast_bundle, tmp_path / "other", name="other", tier_names=["small", "large"])

    async def scenario() -> bool:
        _promote(uri, other)  # version 2: a good bundle, but for another ladder
        moved = await watch.poll(service)
        await service.aclose()
        return moved

    with caplog.at_level(logging.WARNING, logger="service.router.registry_watch"):
        assert asyncio.run(scenario()) is False
    assert service.manifest.model_version == first and service.tiers == tiers
    assert watch.version == "1"
    assert "version 2 refused" in caplog.text and "needs a restart" in caplog.text
    assert 'tierwise_reloads_total{outcome="refused"} 1.0' in service.metrics.render().decode()
    watch.close()
