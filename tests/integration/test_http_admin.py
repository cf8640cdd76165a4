"""The router's admin reload over HTTP, against a real uvicorn server on loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_support import assert_problem


@pytest.fixture()
def reload_service(
    run_service: Any, fast_bundle: Path, admin_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    # every bundle these tests make lies under pytest's base temporary directory
    roots = (tmp_path_factory.getbasetemp(),)
    st: Any = run_service(fast_bundle, admin_key=admin_key, bundle_roots=roots)
    return st


def renamed_copy(bundle: Path, dest: Path, name: str) -> Path:
    shutil.copytree(bundle, dest)
    manifest = json.loads((dest / "manifest.json").read_text("utf-8"))
    manifest["name"] = name
    (dest / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    return dest


def test_reload_swaps_good_bundles_and_refuses_bad_ones(
    reload_service: Any, fast_bundle: Path, admin_key: str, tmp_path: Path
) -> None:
    auth = {"authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=reload_service.http_url, timeout=30) as http:
        old = http.get("/v1/model").json()["model_version"]
        good = renamed_copy(fast_bundle, tmp_path / "v2", "reloaded")
        response = http.post("/v1/admin/reload", json={"path": str(good)}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["previous_model_version"] == old
        new = http.get("/v1/model").json()["model_version"]
        assert new.startswith("reloaded:") and new != old
        assert http.post("/v1/route", json={"prompt": "hi"}).json()["model_version"] == new

        corrupt = renamed_copy(fast_bundle, tmp_path / "corrupt", "corrupt")
        (corrupt / "model.onnx").write_bytes(b"not onnx")
        for path in (corrupt, tmp_path / "missing"):
            response = http.post("/v1/admin/reload", json={"path": str(path)}, headers=auth)
            doc = assert_problem(response, 409, "artifact_mismatch")
            assert str(path) in doc["detail"]
        assert http.get("/v1/model").json()["model_version"] == new
        assert http.post("/v1/route", json={"prompt": "hi"}).json()["model_version"] == new
        assert 'tierwise_reloads_total{outcome="refused"} 2.0' in http.get("/metrics").text


def test_reload_refuses_a_bundle_with_other_tiers(
    reload_service: Any, fast_bundle: Path, three_tier_bundle: Path, admin_key: str,
    tmp_path: Path,
) -> None:
    auth = {"authorization": f"Bearer {admin_key}"}
    renamed = renamed_copy(fast_bundle, tmp_path / "renamed", "renamed")
    repriced = renamed_copy(fast_bundle, tmp_path / "repriced", "repriced")
    edits = ((renamed, 0, {"name": "medium"}), (repriced, -1, {"input_price": 99.0}))
    for path, tier, edit in edits:
        doc = json.loads((path / "manifest.json").read_text("utf-8"))
        doc["tiers"][tier].update(edit)
        doc["classes"] = [t["name"] for t in doc["tiers"]]
        (path / "manifest.json").write_text(json.dumps(doc), "utf-8")
    with httpx.Client(base_url=reload_service.http_url, timeout=30) as http:
        tiers, old = http.get("/v1/tiers").json(), http.get("/v1/model").json()["model_version"]
        for path in (three_tier_bundle, renamed):
            response = http.post("/v1/admin/reload", json={"path": str(path)}, headers=auth)
            doc = assert_problem(response, 409, "tiers_changed")
            assert str(path) in doc["detail"] and "needs a restart" in doc["detail"]
            assert http.get("/v1/tiers").json() == tiers
            assert http.post("/v1/route", json={"prompt": "hi"}).json()["model_version"] == old
        # the same tier names with other prices is not a change of tiers
        response = http.post("/v1/admin/reload", json={"path": str(repriced)}, headers=auth)
        assert response.status_code == 200, response.text
        assert http.get("/v1/tiers").json()["tiers"][-1]["input_price"] == 99.0


def test_reload_needs_the_admin_key(http: httpx.Client, fast_bundle: Path) -> None:
    body = {"path": str(fast_bundle)}
    response = http.post("/v1/admin/reload", json=body)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    wrong = {"authorization": "Bearer nope"}
    assert_problem(http.post("/v1/admin/reload", json=body, headers=wrong), 401, "unauthorized")


def test_reload_is_off_without_an_admin_key(run_service: Any, fast_bundle: Path) -> None:
    st: Any = run_service(fast_bundle)
    with httpx.Client(base_url=st.http_url) as http:
        response = http.post("/v1/admin/reload", json={"path": str(fast_bundle)},
                             headers={"authorization": "Bearer anything"})
        assert_problem(response, 404, "not_found")


def test_reload_only_from_bundle_roots(
    run_service: Any, fast_bundle: Path, admin_key: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    inside = renamed_copy(fast_bundle, root / "v2", "inside")
    outside = renamed_copy(fast_bundle, tmp_path / "outside", "outside")
    linked = root / "linked"
    linked.symlink_to(outside, target_is_directory=True)
    leaky = renamed_copy(fast_bundle, root / "leaky", "leaky")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-LINE", "utf-8")
    (leaky / "manifest.json").unlink()
    (leaky / "manifest.json").symlink_to(secret)
    inner_secret = renamed_copy(fast_bundle, root / "junk", "junk")
    (inner_secret / "manifest.json").write_text("root:x:0:0:SECRET-LINE", "utf-8")
    st: Any = run_service(fast_bundle, admin_key=admin_key, bundle_roots=(root,))
    auth = {"authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=st.http_url, timeout=30) as http:
        for path in (outside, linked, leaky, root / ".." / "outside", "/etc"):
            response = http.post("/v1/admin/reload", json={"path": str(path)}, headers=auth)
            assert_problem(response, 403, "bundle_not_allowed")
            assert "SECRET" not in response.text
        response = http.post("/v1/admin/reload", json={"path": str(inner_secret)}, headers=auth)
        assert_problem(response, 409, "artifact_mismatch")
        assert "SECRET" not in response.text and "root:x" not in response.text
        response = http.post("/v1/admin/reload", json={"path": str(inside)}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["model"]["model_version"].startswith("inside:")
