"""A/B statistics on hand-computed examples, and ``tierwise ab-report`` on small stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from traffic_db import record, write_store

from training.ab_offpolicy import logging_propensity, off_policy, tier_ladder
from training.ab_report import main, online_report
from training.traffic import Decision, read_decisions


def test_propensity_of_the_logging_experiment() -> None:
    recs = [record(0, "router", "weak", router_tier="weak", propensity=0.75),
            record(1, "always_strong", "strong", router_tier="weak", propensity=0.25),
            record(2, "router", "strong", router_tier="strong", propensity=0.75)]
    pi0 = logging_propensity([Decision(r, 1.0, 1) for r in recs])
    d0, d2 = Decision(recs[0], 1.0, 1), Decision(recs[2], 1.0, 1)
    assert pi0(d0, "weak") == 0.75 and pi0(d0, "strong") == 0.25
    assert pi0(d2, "strong") == 1.0  # both arms would have answered with the strong tier


def _ab_decisions(n: int) -> list[Decision]:
    out = []
    for i in range(n):
        router = i % 2 == 0
        tier = "weak" if router and i % 4 == 0 else "strong"
        rec = record(i, "router" if router else "always_strong", tier,
                     router_tier="weak" if i % 4 == 0 else "strong",
                     cost=0.001 if tier == "weak" else 0.01)
        out.append(Decision(rec, 1.0 if i % 3 else 0.0, 1))
    return out


def test_online_report_verdict_and_not_enough_data() -> None:
    rep = online_report(_ab_decisions(200), seed=0, min_labeled=30)
    strong = rep["arms"]["always_strong"]
    assert strong["requests"] == 100 and strong["tier_mix"] == {"strong": 1.0}
    assert rep["arms"]["router"]["cost_per_request_usd"] == pytest.approx(0.0055)
    cmp = rep["comparisons"]["always_strong"]
    assert cmp["cost_diff"]["diff"] == pytest.approx(0.0055 - 0.01)
    assert rep["verdict"].startswith("router arm saves 45.0% per request against 'always_strong'")
    cheaper = [Decision(d.record.model_copy(update={"arm": "always_weak", "cost_usd": 0.001}),
                        d.score, 1) if d.record.arm == "always_strong" else d
               for d in _ab_decisions(200)]
    against_weak = online_report(cheaper, seed=0, min_labeled=30)["verdict"]
    assert against_weak.startswith(  # 0.0055 / 0.001: a ratio, not "+450%"
        "router arm costs 5.50x what 'always_weak' costs per request (+$0.004500)")
    small = online_report(_ab_decisions(40), seed=0, min_labeled=30)
    assert small["verdict"].startswith("not enough data")
    assert "cost_diff" not in small["comparisons"]["always_strong"]


def test_off_policy_recovers_the_logged_router() -> None:
    decisions = _ab_decisions(200)
    est = off_policy(decisions, [0.5], seed=0)
    assert est["n"] == 200 and set(est["knobs"]) == {"0.5"}
    k = est["knobs"]["0.5"]
    assert k["quality_dr"]["lo"] <= k["quality_dr"]["mean"] <= k["quality_dr"]["hi"]


def test_main_writes_report_and_rejects_bad_input(tmp_path: Path) -> None:
    decisions = _ab_decisions(120)
    url = write_store(tmp_path / "t.db", [d.record for d in decisions],
                      [(d.record.decision_id, float(d.score or 0.0)) for d in decisions])
    out = tmp_path / "out"
    assert main(["--db", url, "--out", str(out), "--seed", "3"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["arms"]) == {"router", "always_strong"}
    assert (out / "report.md").read_text().startswith("# A/B report")
    assert (out / "ab_arms.png").stat().st_size > 1000
    assert main(["--db", f"sqlite:///{tmp_path / 'missing.db'}", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert main(["--db", "mysql://nope", "--out", str(tmp_path / "x")]) == 2
    bad = write_store(tmp_path / "bad.db", [decisions[0].record], [("d0", 1.5)])
    assert main(["--db", bad, "--out", str(tmp_path / "x")]) == 2


def test_offline_report(fast_bundle: Path, tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[3] / "data" / "fixtures" / "routellm_small.jsonl"
    out = tmp_path / "off"
    args = ["--offline", "--model", str(fast_bundle), "--data", str(data), "--out", str(out)]
    assert main([*args, "--knob", "0.3", "--knob", "0.7"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["knobs"]) == {"0.3", "0.7"} and set(rep["fixed"]) == {
        "always_weak", "always_strong"}
    assert main(["--offline", "--out", str(out)]) == 2


def _ladder_decisions(cheap: str, dear: str, n: int = 200) -> list[Decision]:
    """Router-arm traffic on two tiers whose names need not sort cheapest first: the router
    scored P(cheap suffices) = 0.7 on every request, so knob 0.5 keeps all on ``cheap`` and 0.9
    sends all to ``dear``."""
    out = []
    for i in range(n):
        tier = cheap if i % 2 else dear
        rec = record(i, "router", tier, router_tier=tier, propensity=1.0,
                     cost=0.001 if tier == cheap else 0.002).model_copy(
            update={"probabilities": {cheap: 0.7, dear: 0.3}})
        out.append(Decision(rec, 1.0 if i % 3 else 0.0, 1))
    return out


@pytest.mark.parametrize(("cheap", "dear"), [("weak", "strong"), ("zeta", "alpha")])
def test_off_policy_uses_the_price_ladder_not_the_dict_order(
    tmp_path: Path, cheap: str, dear: str
) -> None:
    logged = _ladder_decisions(cheap, dear)
    url = write_store(tmp_path / "t.db", [d.record for d in logged],
                      [(d.record.decision_id, float(d.score or 0.0)) for d in logged])
    decisions = read_decisions(url)  # the store keeps probabilities with sorted keys
    assert tier_ladder(decisions) == [cheap, dear]
    est = off_policy(decisions, [0.5, 0.9], seed=0)
    assert est["tiers"] == [cheap, dear]
    assert est["knobs"]["0.5"]["strong_share"] == 0.0
    assert est["knobs"]["0.9"]["strong_share"] == 1.0


def test_off_policy_refuses_a_ladder_it_cannot_price() -> None:
    # the dear tier never answered: where it sits on the ladder is unknown, so no estimate
    decisions = [d for d in _ladder_decisions("weak", "strong") if d.record.tier == "weak"]
    assert tier_ladder(decisions) == ("tier order unknown: ['strong'] never answered a "
                                      "priced request")
    assert off_policy(decisions, [0.5], seed=0)["verdict"].startswith(
        "not enough data: tier order unknown")


def _few_labels_store(tmp_path: Path) -> str:
    """40 router requests (labels 1, 1, 0, ...: mean 0.675) and 40 always_strong ones of which
    only 3 are labeled, all 1.0."""
    recs, labels = [], []
    for i in range(80):
        router = i % 2 == 0
        recs.append(record(i, "router" if router else "always_strong", "strong",
                           router_tier="strong"))
        if router:
            labels.append((f"d{i}", 0.0 if i % 6 == 4 or i % 20 == 2 else 1.0))
        elif i < 6:
            labels.append((f"d{i}", 1.0))
    return write_store(tmp_path / "few.db", recs, labels)


def test_too_few_labels_show_no_quality_in_table_or_plot(tmp_path: Path) -> None:
    from training.ab_render import arms_figure

    out = tmp_path / "out"
    assert main(["--db", _few_labels_store(tmp_path), "--out", str(out), "--seed", "0"]) == 0
    rep = json.loads((out / "report.json").read_text())
    strong = rep["arms"]["always_strong"]
    assert (strong["labeled"], strong["quality"], strong["quality_ci"]) == (3, None, None)
    assert strong["quality_note"] == "not enough data: 3 labels (need 30)"
    lo, hi = rep["arms"]["router"]["quality_ci"]
    assert lo < rep["arms"]["router"]["quality"] < hi
    page = (out / "report.md").read_text()
    assert "| not enough data: 3 labels (need 30) |" in page and "1.000" not in page
    fig = arms_figure(rep)
    ax_q = fig.axes[1]
    # one drawn bar, the router's, with its CI; always_strong's slot is empty and says why
    assert [round(b.get_height(), 3) for b in ax_q.patches] == [
        round(rep["arms"]["router"]["quality"], 3), 0.0]
    from matplotlib.container import ErrorbarContainer

    assert sum(isinstance(c, ErrorbarContainer) for c in ax_q.containers) == 1
    assert any("not enough" in t.get_text() for t in ax_q.texts)
    title = fig.texts[0].get_text()  # suptitle: the whole verdict, wrapped, never cut
    assert title.replace("\n", " ") == rep["verdict"]
    assert "off_policy" not in rep


def test_ci_and_p_value_are_named_and_a_disagreement_is_explained(tmp_path: Path) -> None:
    out = tmp_path / "out"
    url = _few_labels_store(tmp_path)
    assert main(["--db", url, "--out", str(out), "--seed", "0", "--min-labeled", "1"]) == 0
    rep = json.loads((out / "report.json").read_text())
    q = rep["comparisons"]["always_strong"]["quality_diff"]
    # 3 equal labels resample to a zero-width spread: the bootstrap CI excludes 0, the exact
    # permutation test does not reject
    assert q["hi"] < 0 and q["p_value"] > 0.05
    assert "bootstrap 95% CI [" in rep["verdict"] and "permutation test p = " in rep["verdict"]
    assert rep["verdict"].endswith("[the interval and the test disagree: too few labels for the "
                                   "bootstrap interval; the permutation test is exact, trust it]")
    assert rep["arms"]["always_strong"]["quality"] == 1.0  # 3 labels >= --min-labeled 1
    assert "saves 0.0% per request" in rep["verdict"]  # equal costs: never "-0.0%"


def test_off_policy_follows_min_labeled_and_runs_only_with_knob(tmp_path: Path) -> None:
    decisions = _ab_decisions(20)
    url = write_store(tmp_path / "t.db", [d.record for d in decisions],
                      [(d.record.decision_id, float(d.score or 0.0)) for d in decisions])
    out = tmp_path / "out"
    assert main(["--db", url, "--out", str(out), "--knob", "0.5", "--min-labeled", "10"]) == 0
    est = json.loads((out / "report.json").read_text())["off_policy"]
    assert est["n"] == 20 and set(est["knobs"]) == {"0.5"}
    assert main(["--db", url, "--out", str(out), "--knob", "0.5"]) == 0
    assert json.loads((out / "report.json").read_text())["off_policy"] == {
        "verdict": "not enough data: 20 labeled requests with probabilities (need 30)"}


def test_model_versions_per_arm_and_a_mixed_router_arm(tmp_path: Path) -> None:
    decisions = [Decision(d.record.model_copy(update={
        "model_version": "v1" if d.record.created_at.second < 30 else "v2"}), d.score, 1)
        for d in _ab_decisions(120)]
    url = write_store(tmp_path / "t.db", [d.record for d in decisions],
                      [(d.record.decision_id, float(d.score or 0.0)) for d in decisions])
    out = tmp_path / "out"
    assert main(["--db", url, "--out", str(out), "--seed", "0"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["arms"]["router"]["model_versions"] == {"v1": 30, "v2": 30}
    assert rep["verdict"].endswith(
        "; note: the 'router' arm mixes model versions v1 (30 requests), v2 (30 requests)")
    assert "| v1 (30), v2 (30) |" in (out / "report.md").read_text()
    one = online_report(_ab_decisions(120), seed=0, min_labeled=30)
    assert "mixes model versions" not in one["verdict"]
