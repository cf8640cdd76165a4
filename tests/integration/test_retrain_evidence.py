"""``tierwise retrain`` asks for evidence: trainable data, a frozen set big enough to promote on,
and a comparison on rows neither side was fitted on (real MLflow SQLite registry and a real
traffic store in tmp dirs)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest
from retrain_support import DATA, champion_store, fixture_rows, labeled_store, write_rows

from router_model.artifact import read_bundle
from router_model.errors import InvalidData
from training import registry
from training.data import dedupe
from training.retrain import RetrainConfig, load_base, run_retrain
from training.retrain import main as retrain_main
from training.retrain_gate import Frame, card

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


def test_default_gate_judges_the_champion_refitted_on_rows_it_has_not_seen(
        fast_bundle: Path, tmp_path: Path) -> None:
    # the champion (fast_bundle) was fitted on all of DATA; the frozen set is drawn from DATA
    uri = champion_store(tmp_path, fast_bundle)
    db = labeled_store(tmp_path / "t.db", fixture_rows())
    common = ["--db", db, "--name", "tiny_fast", "--tracking-uri", uri, "--base-data", str(DATA),
              "--min-eval-rows", "1", *LENIENT]
    assert retrain_main([*common, "--out", str(tmp_path / "a")]) == 0
    decision = json.loads((tmp_path / "a" / "retrain_decision.json").read_text())
    assert decision["champion_judged"] == "refit on base-train"
    assert decision["reasons"][0].startswith("champion judged: refit on base-train")
    # the figure is the refit's: the artifact scores better on the frozen rows it was fitted on
    cfg = RetrainConfig(
        db=db, name="tiny_fast", tracking_uri=uri, out=tmp_path / "unused", base_data=(DATA,),
        eval_data=None, since=None, traffic_weight=2.0, adequate=0.5, margin=1.0,
        max_slowdown=100.0, holdout_fraction=0.2, bundle_out=None, estimator=None, seed=0)
    manifest, onnx_bytes = read_bundle(fast_bundle)
    _, frozen = load_base(cfg, manifest, manifest.tier_ladder())
    artifact = card(onnx_bytes, Frame(frozen, None), manifest.classes)["frozen"]["gate"]
    judged = decision["cards"]["champion"]["frozen"]
    assert judged["n"] == len(frozen.rows)
    assert judged["gate"] != artifact


def test_eval_data_the_champion_was_fitted_on_is_refused(fast_bundle: Path,
                                                        tmp_path: Path) -> None:
    uri = champion_store(tmp_path, fast_bundle)
    db = labeled_store(tmp_path / "t.db", fixture_rows())
    common = ["--db", db, "--name", "tiny_fast", "--tracking-uri", uri, "--base-data", str(DATA),
              "--min-eval-rows", "1", *LENIENT]
    part = write_rows(tmp_path / "part.jsonl", fixture_rows()[::4])
    for eval_file in (DATA, part):  # its own training file; rows of its base data
        out = tmp_path / eval_file.stem
        assert retrain_main([*common, "--out", str(out), "--eval-data", str(eval_file)]) == 2
        assert not out.exists()
    assert registry.alias_version(uri, "tiny_fast", registry.CHALLENGER) is None
    # rows the champion never saw, nor this retrain's training rows: the artifact itself is judged
    # (deduplicated: two fixture rows share a prompt)
    rows = dedupe(fixture_rows())
    rest = [r for i, r in enumerate(rows) if i % 4]
    other = write_rows(tmp_path / "other.jsonl", rows[::4])
    base = write_rows(tmp_path / "base.jsonl", rest)
    db = labeled_store(tmp_path / "rest.db", rest)
    out = tmp_path / "ok"
    assert retrain_main(["--db", db, *common[2:6], "--base-data", str(base), "--min-eval-rows",
                         "1", *LENIENT, "--out", str(out), "--eval-data", str(other)]) == 0
    decision = json.loads((out / "retrain_decision.json").read_text())
    assert decision["champion_judged"] == "artifact"
    assert decision["data"]["eval_overlap"] == {"rows": 0, "base": 0, "traffic": 0}


def test_eval_data_this_retrain_trains_on_is_refused(fast_bundle: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # the champion's manifest cannot tell (base = the other rows), but the traffic holds them
    uri = champion_store(tmp_path, fast_bundle)
    rows = dedupe(fixture_rows())  # two fixture rows share a prompt
    evaluation = write_rows(tmp_path / "eval.jsonl", rows[::4])  # 30 rows
    base = write_rows(tmp_path / "base.jsonl", [r for i, r in enumerate(rows) if i % 4])

    def config(db: str, out: Path) -> RetrainConfig:
        return RetrainConfig(
            db=db, name="tiny_fast", tracking_uri=uri, out=out, base_data=(base,),
            eval_data=evaluation, since=None, traffic_weight=2.0, adequate=0.5, margin=1.0,
            max_slowdown=100.0, holdout_fraction=0.2, bundle_out=None, estimator=None, seed=0,
            min_eval_rows=1)

    # every fixture row as traffic: its older 80% (training) holds most evaluation prompts
    db = labeled_store(tmp_path / "all.db", rows)
    with pytest.raises(InvalidData) as refused:
        run_retrain(config(db, tmp_path / "refused"))
    counts = re.search(r"(\d+) of its 30 rows \([\d.]+%\) have a prompt this retrain trains on "
                       r"\(0 in --base-data, (\d+) in the labeled traffic\), at least 5%",
                       str(refused.value))
    assert counts is not None and int(counts[1]) == int(counts[2]) >= 20, refused.value
    assert not (tmp_path / "refused").exists()
    assert registry.alias_version(uri, "tiny_fast", registry.CHALLENGER) is None
    # one evaluation prompt (whitespace changed) in the traffic: 1 of 30 is under 5%, so it is
    # warned about and that traffic row is left out of training
    first = replace(rows[0], prompt="  " + rows[0].prompt.replace(" ", "\t ") + "\n")
    db = labeled_store(tmp_path / "one.db", [first, *(r for i, r in enumerate(rows) if i % 4)])
    with caplog.at_level(logging.WARNING, logger="training.retrain_gate"):
        decision = run_retrain(config(db, tmp_path / "warned"))
    assert "1 of its 30 rows (3.3%) have a prompt this retrain trains on" in caplog.text
    data = decision["data"]
    assert data["eval_overlap"] == {"rows": 1, "base": 0, "traffic": 1}
    assert data["traffic_train"] == data["traffic_labeled"] - data["traffic_holdout"] - 1
    assert decision["champion_judged"] == "artifact"


def test_base_rows_are_embedded_through_the_training_cache(full_bundle: Path,
                                                           tmp_path: Path) -> None:
    """A full-feature champion's base rows go through the embedding cache training fills, so a
    retrain does not embed the whole base data again (same features with and without it)."""
    manifest, _ = read_bundle(full_bundle)
    cfg = RetrainConfig(
        db="", name="tiny_full", tracking_uri="", out=tmp_path / "out", base_data=(DATA,),
        eval_data=None, since=None, traffic_weight=2.0, adequate=0.5, margin=1.0,
        max_slowdown=100.0, holdout_fraction=0.2, bundle_out=None, estimator=None, seed=0,
        cache_dir=tmp_path / "cache")
    cached, _ = load_base(cfg, manifest, manifest.tier_ladder())
    assert any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    again, _ = load_base(cfg, manifest, manifest.tier_ladder())  # read back from the cache
    plain, _ = load_base(replace(cfg, cache_dir=None), manifest, manifest.tier_ladder())
    assert (cached.X == plain.X).all() and (again.X == plain.X).all()
