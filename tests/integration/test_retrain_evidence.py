"""``tierwise retrain`` asks for evidence: trainable data, a frozen set big enough to promote on
(real MLflow SQLite registry and a real traffic store in tmp dirs)."""

from __future__ import annotations

import json
from pathlib import Path

from retrain_support import DATA, champion_store, fixture_rows, labeled_store, write_rows

from training import registry
from training.retrain import main as retrain_main

LENIENT = ["--margin", "1", "--max-slowdown", "100", "--seed", "0"]


def test_untrainable_data_is_refused(fast_bundle: Path, tmp_path: Path) -> None:
    uri = champion_store(tmp_path, fast_bundle)
    # 12 base rows from several groups + 2 traffic prompts: below check_trainable's 20 rows
    base = write_rows(tmp_path / "base.jsonl", fixture_rows()[::10])
    db = labeled_store(tmp_path / "t.db", fixture_rows(2, start=61))
    out = tmp_path / "out"
    assert retrain_main(["--db", db, "--name", "tiny_fast", "--out", str(out), "--tracking-uri",
                         uri, "--base-data", str(base), *LENIENT]) == 2
    assert not out.exists()
    assert registry.alias_version(uri, "tiny_fast", registry.CHALLENGER) is None
    assert registry.alias_version(uri, "tiny_fast", registry.CHAMPION) == "1"


def test_small_frozen_set_registers_but_does_not_promote(fast_bundle: Path,
                                                         tmp_path: Path) -> None:
    uri = champion_store(tmp_path, fast_bundle)
    db = labeled_store(tmp_path / "t.db", fixture_rows())
    common = ["--db", db, "--name", "tiny_fast", "--tracking-uri", uri, "--base-data", str(DATA),
              *LENIENT]
    assert retrain_main([*common, "--out", str(tmp_path / "a")]) == 0
    decision = json.loads((tmp_path / "a" / "retrain_decision.json").read_text())
    frozen = decision["data"]["frozen_rows"]
    assert frozen < 200 and not decision["promoted"] and decision["min_eval_rows"] == 200
    assert f"frozen: {frozen} rows (at least 200 needed to promote) -> FAIL" in decision["reasons"]
    assert registry.alias_version(uri, "tiny_fast", registry.CHALLENGER) == "2"
    assert registry.alias_version(uri, "tiny_fast", registry.CHAMPION) == "1"
    # the same run with the floor lowered below the frozen set's size promotes (lenient margin)
    assert retrain_main([*common, "--out", str(tmp_path / "b"), "--min-eval-rows",
                         str(frozen)]) == 0
    decision = json.loads((tmp_path / "b" / "retrain_decision.json").read_text())
    assert decision["promoted"], decision["reasons"]
    assert registry.alias_version(uri, "tiny_fast", registry.CHAMPION) == "3"
