"""``tierwise train`` / ``evaluate`` / ``convert`` end to end on real fixture rows, with MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from cli.main import main as cli
from router_model.artifact import read_bundle
from router_model.features import FEATURE_VERSION
from router_model.router import ComplexityRouter
from training import registry

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "data" / "fixtures"
TIERS = REPO / "data" / "tiers"


def test_fixture_bundle_is_complete(full_bundle: Path) -> None:
    manifest, onnx = read_bundle(full_bundle)
    assert manifest.feature_version == FEATURE_VERSION
    assert manifest.classes == ["weak", "strong"]
    assert manifest.metrics["onnx_parity_max_abs_diff"] <= 1e-5
    assert {"unseen", "in_domain"} <= set(manifest.metrics)
    assert 0.0 <= manifest.threshold <= 1.0
    router = ComplexityRouter.from_artifact(full_bundle)
    proba = router.predict_proba(["What is 2+2?", "Prove that there are infinitely many primes."])
    assert proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_three_tier_bundle_routes(three_tier_bundle: Path) -> None:
    router = ComplexityRouter.from_artifact(three_tier_bundle)
    assert [t.name for t in router.tiers] == ["small", "medium", "large"]
    low = router.route("What is the capital of France?", policy=None)
    assert low.tier in {"small", "medium", "large"}
    from router_model.policy import Policy

    assert router.route("What is 2+2?", policy=Policy(quality=1.0)).tier == "large"
    assert router.route("What is 2+2?", policy=Policy(quality=0.0)).tier == "small"


def test_evaluate_writes_report_and_plot(full_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code = cli(
        [
            "evaluate",
            "--model",
            str(full_bundle),
            "--data",
            str(FIXTURES / "routellm_small.jsonl"),
            "--out",
            str(out),
            "--no-cache",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("apgr", "cpt50", "cpt80", "aiq"):
        assert key in report
    for base in ("always_weak", "always_strong", "random", "zero_router", "oracle"):
        assert base in report["baselines"]
    assert 0.0 < report["apgr"] < 1.5
    assert abs(report["baselines"]["random"]["apgr"] - 0.5) < 1e-6
    for key in ("apgr", "cpt50", "cpt80", "aiq"):  # bootstrap 95% interval around each figure
        lo, hi = report["ci95"][key]
        assert lo <= report[key] <= hi and lo < hi
    # what a request without a policy gets: the bundle's own knob, on the router's curve
    at = report["at_default_knob"]
    assert at["knob"] == read_bundle(full_bundle)[0].threshold
    assert sum(at["tier_shares"]) == pytest.approx(1.0)
    assert at["strong_share"] == at["tier_shares"][-1]
    weak, strong = report["weak_quality"], report["strong_quality"]
    assert at["pgr"] == pytest.approx((at["quality"] - weak) / (strong - weak))
    assert (out / "cost_quality.png").stat().st_size > 1000


def test_evaluate_rejects_bad_data(
    full_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = FIXTURES / "bad" / "no_tier_models.jsonl"
    code = cli(
        [
            "evaluate",
            "--model",
            str(full_bundle),
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--no-cache",
        ]
    )
    assert code == 2
    assert "no_tier_models.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize(
    "name", ["bad_json", "empty_prompt", "missing_prompt", "score_out_of_range", "no_tier_models"]
)
def test_train_on_bad_data_leaves_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import main

    bad = FIXTURES / "bad" / f"{name}.jsonl"
    code = main(
        [
            "--data",
            str(bad),
            "--tiers",
            str(TIERS / "routellm.yaml"),
            "--name",
            "x",
            "--feature-set",
            "hand",
            "--models-dir",
            str(tmp_path / "models"),
            "--reports-dir",
            str(tmp_path / "r"),
            "--no-register",
            "--no-cache",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert bad.name in err
    if name != "no_tier_models":
        assert ":3:" in err  # the defect is on line 3 of each fixture
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_train_registers_in_mlflow(tmp_path: Path) -> None:
    from training.train import main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        "--data",
        str(FIXTURES / "routellm_small.jsonl"),
        "--tiers",
        str(TIERS / "routellm.yaml"),
        "--name",
        "reg",
        "--feature-set",
        "hand",
        "--estimator",
        "logreg",
        "--models-dir",
        str(tmp_path / "models"),
        "--reports-dir",
        str(tmp_path / "r"),
        "--tracking-uri",
        uri,
        "--no-cache",
    ]
    assert main(args) == 0
    assert registry.alias_version(uri, "reg", registry.CHAMPION) == "1"
    # a SQLite store keeps its artifacts beside the database, not in the working directory
    assert any((tmp_path / "mlruns").rglob("model.onnx"))
    # second run, with task balancing: registered as challenger, champion unchanged
    assert main([*args, "--balance-tasks"]) == 0
    assert registry.alias_version(uri, "reg", registry.CHAMPION) == "1"
    assert registry.alias_version(uri, "reg", registry.CHALLENGER) == "2"
    client = mlflow.MlflowClient(uri)
    logged = [
        client.get_run(client.get_model_version("reg", v).run_id).data.params["balance_tasks"]
        for v in ("1", "2")
    ]
    assert logged == ["False", "True"]
    local = registry.materialize(uri, "models:/reg@champion", tmp_path / "dl")
    manifest, _ = read_bundle(local)
    assert manifest.name == "reg"
    from router_model.errors import NotFound

    with pytest.raises(NotFound):
        registry.materialize(uri, "models:/nope@champion", tmp_path / "dl2")
