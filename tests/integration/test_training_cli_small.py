"""``tierwise train`` on 40 real rows and two tiers: it trains (no crash), ranks prompts, and says
when the bundle is not shown to beat random routing (or refuses it with ``--strict``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router_model.artifact import read_bundle
from router_model.router import ComplexityRouter
from training.train import main as train

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "data" / "fixtures" / "routellm_small.jsonl"
TIERS = REPO / "data" / "tiers" / "routellm.yaml"
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def _rows(tmp_path: Path, groups: str) -> Path:
    """40 real fixture rows (prompts and scores as measured), 10 of them needing GPT-4.

    ``groups``: ``"labels"`` tags each row with a group that lines up with its label (a user's
    own "easy"/"hard" piles), ``"none"`` drops the group.
    """
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    hard = [r for r in rows if r["scores"][STRONG] > r["scores"][WEAK]][:10]
    easy = [r for r in rows if r["scores"][STRONG] <= r["scores"][WEAK]][:30]
    out = []
    for r in hard + easy:
        doc = {"prompt": r["prompt"], "scores": r["scores"]}
        if groups == "labels":
            doc["group"] = "hard" if r in hard else "easy"
        out.append(json.dumps(doc))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def _train(tmp_path: Path, data: Path, *extra: str) -> int:
    return train(["--data", str(data), "--tiers", str(TIERS), "--name", "small",
                  "--models-dir", str(tmp_path / "models"), "--reports-dir",
                  str(tmp_path / "reports"), "--no-register", "--no-cache", *extra])


@pytest.mark.parametrize(("groups", "feature_set"),
                         [("labels", "full"), ("none", "full"), ("none", "hand")])
def test_forty_rows_train_rank_and_warn(
    groups: str, feature_set: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _rows(tmp_path, groups)
    assert _train(tmp_path, data, "--feature-set", feature_set, "--compare") == 0
    manifest, _ = read_bundle(tmp_path / "models" / "small")
    router = ComplexityRouter.from_artifact(tmp_path / "models" / "small")
    prompts = [json.loads(line)["prompt"] for line in data.read_text().splitlines()]
    proba = router.predict_proba(prompts)[:, 1]
    assert np.unique(np.round(proba, 6)).size >= 10  # it ranks, not one value for all
    # the warning follows the held-out interval: in the log, the manifest and the report
    reports = tmp_path / "reports" / "small"
    split = "unseen" if (reports / "report_unseen.json").exists() else "in_domain"
    report = json.loads((reports / f"report_{split}.json").read_text())
    ci = report["ci95"]["apgr"]
    includes_random = ci is None or ci[0] <= 0.5 <= ci[1]
    held_out = [w for w in manifest.warnings if w.startswith("held-out")]
    assert bool(held_out) == includes_random
    assert ("small: WARNING held-out" in capsys.readouterr().err) == includes_random
    assert report["warnings"] == manifest.warnings


def test_strict_refuses_a_bundle_not_shown_to_beat_random(tmp_path: Path) -> None:
    data = _rows(tmp_path, "none")
    assert _train(tmp_path, data, "--feature-set", "hand", "--strict") == 2
    assert not (tmp_path / "models" / "small").exists()
