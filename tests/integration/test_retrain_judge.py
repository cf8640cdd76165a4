"""``tierwise retrain`` learns from judge labels: a prompt whose tiers the judge all graded gets
the label its labeled-data row would get, ``retrain_decision.json`` counts rows by source, and
such rows can be fitted on their score gain (``--fit-on``)."""

from __future__ import annotations

import json
from pathlib import Path

from retrain_support import DATA, champion_store, fixture_rows, judged_store, labeled_store

from router_model.artifact import read_bundle
from training.data import dedupe
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
    # every tier graded, but too few rows to compare the fit rules: --fit-on auto keeps labels
    assert by_judge.complete == (True,) * len(by_judge.labels)
    assert decision["fit_on"] == "label" and "at least 100" in decision["data"]["fit_rule"]["why"]
    assert decision["data"]["traffic_fit_on_gain"] == 0
    labelled = read_bundle(out / "challenger")[0]
    assert labelled.label_rule.fit == "label"

    by_gain = tmp_path / "by_gain"
    assert retrain_main(["--db", judged, "--name", "tiny_fast", "--out", str(by_gain),
                         "--tracking-uri", uri, "--base-data", str(DATA), "--fit-on", "gain",
                         "--judge-weight", "0.5", "--seed", "0"]) == 0
    decision = json.loads((by_gain / "retrain_decision.json").read_text())
    assert decision["fit_on"] == "gain"
    assert decision["data"]["traffic_fit_on_gain"] == decision["data"]["traffic_train"] > 0
    gained = read_bundle(by_gain / "challenger")[0]
    assert gained.label_rule.fit == "gain" and gained.onnx_sha256 != labelled.onnx_sha256


def test_auto_compares_the_fit_rules_on_the_judged_traffic(fast_bundle: Path,
                                                          tmp_path: Path) -> None:
    judged = judged_store(tmp_path / "judged.db", fixture_rows())
    uri = champion_store(tmp_path, fast_bundle)
    out = tmp_path / "out"
    assert retrain_main(["--db", judged, "--name", "tiny_fast", "--out", str(out),
                         "--tracking-uri", uri, "--base-data", str(DATA),
                         "--holdout-fraction", "0", "--seed", "0"]) == 0
    decision = json.loads((out / "retrain_decision.json").read_text())
    rule = decision["data"]["fit_rule"]
    assert rule["rows"] == decision["data"]["traffic_train"] >= 100 and rule["folds"] == 5
    label, gain = rule["apgr"]["label"], rule["apgr"]["gain"]
    assert decision["fit_on"] == ("gain" if gain > label else "label")
    assert read_bundle(out / "challenger")[0].label_rule.fit == decision["fit_on"]


def test_the_same_labels_fit_the_same_challenger_whatever_their_order(fast_bundle: Path,
                                                                     tmp_path: Path) -> None:
    rows = dedupe(fixture_rows())
    uri = champion_store(tmp_path, fast_bundle)
    shas = []
    for name, order in (("first", rows), ("reversed", rows[::-1])):
        out, db = tmp_path / name, judged_store(tmp_path / f"{name}.db", order, by_prompt=True)
        assert retrain_main(["--db", db, "--name", "tiny_fast", "--out", str(out),
                             "--tracking-uri", uri, "--base-data", str(DATA),
                             "--holdout-fraction", "0", "--seed", "0"]) == 0
        shas.append(read_bundle(out / "challenger")[0].onnx_sha256)
    assert shas[0] == shas[1]
