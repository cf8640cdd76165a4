"""``tierwise train`` / ``evaluate`` refuse what they cannot do, before writing anything."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from cli.main import main as cli
from router_model.artifact import read_bundle
from training.train import main as train

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "data" / "fixtures"
TIERS = REPO / "data" / "tiers" / "routellm.yaml"


def _train(tmp_path: Path, data: Path, *extra: str) -> int:
    return train(["--data", str(data), "--tiers", str(TIERS), "--feature-set", "hand",
                  "--estimator", "hand_logreg", "--models-dir", str(tmp_path / "models"),
                  "--reports-dir", str(tmp_path / "reports"), "--no-register", "--no-cache",
                  *extra])


def _rows(n: int, *, group: str | None = "g", strong_every: int = 3) -> list[str]:
    """``n`` real fixture prompts, re-labeled: every ``strong_every``-th needs the strong tier."""
    text = (FIXTURES / "routellm_small.jsonl").read_text()
    src = [json.loads(line) for line in text.splitlines()]
    out = []
    for i, row in enumerate(src[:n]):
        need = i % strong_every == 0
        doc = {"prompt": row["prompt"], "scores": {
            "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.0 if need else 1.0,
            "gpt-4-1106-preview": 1.0}}
        if group is not None:
            doc["group"] = group
        out.append(json.dumps(doc))
    return out


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", [".", "..", "../escaped", "a/b", "", "-x", "routellm"])
def test_unsafe_or_shipped_names_are_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "keepme").write_text("x")
    with pytest.raises(SystemExit) as exc:
        _train(tmp_path, FIXTURES / "routellm_small.jsonl", "--name", name)
    assert exc.value.code == 2
    assert "--name" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["keepme"]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--tolerance", "nan"), ("--tolerance", "-1"), ("--tolerance", "2"),
                        ("--estimator", "bogus")],
)
def test_bad_flags_are_usage_errors(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _train(tmp_path, FIXTURES / "routellm_small.jsonl", "--name", "x", flag, value)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_data_without_tiers_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train(["--data", str(FIXTURES / "routellm_small.jsonl"), "--name", "x"])
    assert exc.value.code == 2
    assert "--data needs --tiers and --name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "match"),
    [(_rows(5), "5 usable rows"),
     (_rows(60, strong_every=10_000), r"rows per cheapest adequate tier \(weak: 5\d, strong: 1\)")],
)
def test_too_little_to_learn_stops_clearly(
    lines: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path, lines)
    assert _train(tmp_path, data, "--name", "x") == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and str(data) in err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_one_group_trains_without_unseen_figures(tmp_path: Path) -> None:
    # every row in one group (e.g. a GSM8K file): no held-out-group split exists
    assert _train(tmp_path, _write(tmp_path, _rows(120)), "--name", "one", "--compare") == 0
    manifest, _ = read_bundle(tmp_path / "models" / "one")
    assert "in_domain" in manifest.metrics and "unseen" not in manifest.metrics


def test_evaluate_refuses_an_unusable_out_before_evaluating(
    full_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "file"
    taken.write_text("x")
    with pytest.raises(SystemExit) as exc:
        cli(["evaluate", "--model", str(full_bundle), "--data",
             str(FIXTURES / "routellm_small.jsonl"), "--out", str(taken), "--no-cache"])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err
    assert taken.read_text() == "x"


def test_evaluate_report_is_world_readable(full_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert cli(["evaluate", "--model", str(full_bundle), "--data",
                str(FIXTURES / "routellm_small.jsonl"), "--out", str(out), "--no-cache"]) == 0
    assert stat.S_IMODE((out / "report.json").stat().st_mode) == 0o644


def test_results_md_only_for_the_repositorys_own_folders(tmp_path: Path) -> None:
    from router_model.settings import DATA_DIR, REPO_ROOT
    from training.train import TrainPaths, rewrites_results

    def paths(models: Path, reports: Path) -> TrainPaths:
        return TrainPaths(labeled_dir=tmp_path, tiers_dir=tmp_path, models_dir=models,
                          reports_dir=reports, cache_dir=None, tracking_uri=None)

    assert rewrites_results(paths(DATA_DIR / "models", REPO_ROOT / "reports"))
    # a models folder from --models-dir or TIERWISE_TRAINING__MODELS_DIR holds other bundles
    assert not rewrites_results(paths(tmp_path / "models", REPO_ROOT / "reports"))
    assert not rewrites_results(paths(DATA_DIR / "models", tmp_path / "reports"))
