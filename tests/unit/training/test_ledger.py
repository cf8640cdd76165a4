"""The savings ledger in retraining and ``tierwise ab-report``: cache rows, lever shares in USD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from traffic_db import record, write_store

from router_model.tiers import Tier
from training.ab_report import lever_ledger, main
from training.traffic import Decision, label_traffic, read_decisions

TIERS = (Tier("weak", "w", 0.6, 0.6), Tier("strong", "s", 10.0, 30.0))


def test_cache_rows_are_never_labels(tmp_path: Path) -> None:
    paid = record(0, "router", "weak", sha="same")
    hit = record(1, "router", "weak", sha="same", cost=0.0).model_copy(
        update={"source": "cache", "levers": {"cache": 0.001}})
    # weak failed (0.0); a thumbs-up on the replayed copy would pool weak to 0.5, "adequate"
    url = write_store(tmp_path / "t.db", [paid, hit], [("d0", 0.0), ("d1", 1.0)])
    labels = label_traffic(read_decisions(url), TIERS, width=4, threshold=0.5)
    assert labels.skipped == {"cache_hit": 1}
    assert labels.labels.tolist() == [1]  # weak seen failing: escalate one step


def test_lever_ledger_hand_example() -> None:
    # top tier 0.002 each; paid 0.0005 (routing + trim 0.0003) and 0.0 (cache hit of 0.0005)
    a = record(0, "router", "weak", cost=0.0005).model_copy(update={"levers": {"trim": 0.0003}})
    b = record(1, "router", "weak", cost=0.0).model_copy(
        update={"source": "cache", "levers": {"cache": 0.0005}})
    c = record(2, "router", "weak", cost=0.0019).model_copy(update={"levers": {"cascade": -0.0001}})
    ledger = lever_ledger([Decision(r, None, 0) for r in (a, b, c)])
    # saved: 0.0015 + 0.002 + 0.0001 = 0.0036; routing = 0.0036 - (0.0003 + 0.0005 - 0.0001)
    assert ledger["savings_usd"] == pytest.approx(0.0036)
    usd = {k: v["usd"] for k, v in ledger["levers"].items()}
    assert usd == pytest.approx({"routing": 0.0029, "ab_fixed_arm": 0.0, "fail_open": 0.0,
                                 "cache": 0.0005, "trim": 0.0003, "batch": 0.0,
                                 "cascade": -0.0001})
    share = {k: v["share_pct"] for k, v in ledger["levers"].items()}
    assert share["routing"] == pytest.approx(100 * 29 / 36)
    assert share["cascade"] == pytest.approx(-100 / 36)
    assert sum(share.values()) == pytest.approx(100.0)
    assert lever_ledger([])["levers"]["routing"] == {"usd": 0.0, "share_pct": 0.0}


def test_ab_report_shows_the_ledger(tmp_path: Path) -> None:
    rows = [record(i, "router" if i % 2 else "weak-arm", "weak", cost=0.0005).model_copy(
        update={"levers": {"trim": 0.0005}}) for i in range(4)]
    url = write_store(tmp_path / "t.db", rows, [])
    assert main(["--db", url, "--out", str(tmp_path / "out"), "--seed", "1"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # each row: top 0.002, paid 0.0005, trim 0.0005, tier choice 0.001: the router's on the
    # router arm, the fixed arm's own on "weak-arm" (never routing's)
    assert report["ledger"]["savings_usd"] == pytest.approx(4 * 0.0015)
    assert report["ledger"]["levers"]["trim"]["share_pct"] == pytest.approx(100 / 3)
    assert report["arms"]["router"]["ledger"]["levers"]["routing"]["usd"] == pytest.approx(0.002)
    fixed = report["arms"]["weak-arm"]["ledger"]["levers"]
    assert fixed["routing"]["usd"] == 0.0 and fixed["ab_fixed_arm"]["usd"] == pytest.approx(0.002)
    page = (tmp_path / "out" / "report.md").read_text()
    assert "| trim | 0.002000 | 33.3% |" in page and "| routing | 0.002000 | 33.3% |" in page
    assert "| ab_fixed_arm | 0.002000 | 33.3% |" in page
    # no feedback at all: the saving is never headlined without saying quality is unknown
    assert report["ledger"]["quality"] == "unknown: no feedback recorded"
    assert "saved against the top tier; quality unknown: no feedback recorded)" in page
