"""``tierwise retrain`` learns from judge labels: a prompt whose tiers the judge all graded gets
the label its labeled-data row would get, and ``retrain_decision.json`` counts rows by source."""

from __future__ import annotations

import json
from pathlib import Path

from retrain_support import DATA, champion_store, fixture_rows, judged_store, labeled_store

from router_model.artifact import read_bundle
from training.retrain import main as retrain_main
from training.traffic import DEFAULT_ADEQUATE, label_traffic, read_decisions


def test_judge_labels_equal_full_feedback_and_are_counted(fast_bundle: Path,
                                                          tmp_path: Path) -> None:
    rows = fixture_rows(60)
    judged = judged_store(tmp_path / "judged.db", rows)
    both = labeled_store(tmp_path / "both.db", rows)  # both tiers answered, scored as feedback
    manifest = read_bundle(fast_bundle)[0]
    width, tiers = len(manifest.feature_names), manifest.tier_ladder()
    by_judge = label_traffic(read_decisions(judged), tiers, width, DEFAULT_ADEQUATE)
    by_feedback = label_traffic(read_decisions(both), tiers, width, DEFAULT_ADEQUATE)
    assert by_judge.labels.tolist() == by_feedback.labels.tolist()
    assert set(by_judge.sources) == {"judge"} and set(by_feedback.sources) == {"feedback"}

    uri = champion_store(tmp_path, fast_bundle)
    out = tmp_path / "out"
    assert retrain_main(["--db", judged, "--name", "tiny_fast", "--out", str(out),
                         "--tracking-uri", uri, "--base-data", str(DATA), "--judge-weight", "0.5",
                         "--seed", "0"]) == 0
    decision = json.loads((out / "retrain_decision.json").read_text())
    assert decision["data"]["label_sources"] == {"judge": len(by_judge.labels)}
    assert decision["judge_weight"] == 0.5
