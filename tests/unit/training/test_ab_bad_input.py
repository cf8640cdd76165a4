"""``tierwise ab-report`` on stores that cannot answer: no labels, arms with no traffic, labels out
of range. Each is a clear answer ("not enough data" or exit 2), never a number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from traffic_db import record, write_store

from router_model.errors import InvalidData
from training.ab_report import main
from training.traffic import read_decisions


def _report(tmp_path: Path, url: str) -> dict[str, object]:
    out = tmp_path / "out"
    assert main(["--db", url, "--out", str(out), "--seed", "0"]) == 0
    doc: dict[str, object] = json.loads((out / "report.json").read_text())
    return doc


def test_a_store_without_labels_is_not_enough_data(tmp_path: Path) -> None:
    recs = [record(i, "router" if i % 2 else "always_strong", "strong") for i in range(80)]
    rep = _report(tmp_path, write_store(tmp_path / "t.db", recs, []))
    assert rep["verdict"] == ("not enough data: 0 labeled requests on 'router', 0 on "
                              "'always_strong' (need 30 each)")
    assert rep["comparisons"] == {"always_strong": {"verdict": rep["verdict"]}}
    assert "off_policy" not in rep  # estimated only for the knobs asked for (--knob)
    out = tmp_path / "knob"
    url = write_store(tmp_path / "k.db", recs, [])
    assert main(["--db", url, "--out", str(out), "--knob", "0.5"]) == 0
    assert json.loads((out / "report.json").read_text())["off_policy"] == {
        "verdict": "not enough data: 0 labeled requests with probabilities (need 30)"}


@pytest.mark.parametrize(
    ("arms", "got"),
    [(["router"], "['router']"), (["always_strong"], "['always_strong']"), ([], "[]")],
)
def test_arms_with_no_traffic_are_not_enough_data(tmp_path: Path, arms: list[str],
                                                  got: str) -> None:
    recs = [record(i, arms[i % len(arms)], "strong") for i in range(60)] if arms else []
    url = write_store(tmp_path / "t.db", recs, [(r.decision_id, 1.0) for r in recs])
    rep = _report(tmp_path, url)
    assert rep["verdict"] == f"not enough data: need the 'router' arm and one other, got {got}"
    assert rep["comparisons"] == {}


@pytest.mark.parametrize("value", [-0.5, 1.01, 7.0])
def test_labels_out_of_range_are_refused_and_nothing_written(tmp_path: Path, value: float) -> None:
    recs = [record(0, "router", "weak"), record(1, "always_strong", "strong")]
    url = write_store(tmp_path / "t.db", recs, [("d0", 1.0), ("d1", value)])
    with pytest.raises(InvalidData, match=r"feedback for 'd1': value .* is outside \[0, 1\]"):
        read_decisions(url)
    assert main(["--db", url, "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_pass_through_traffic_is_no_arm(tmp_path: Path) -> None:
    # 40 router, 40 always_strong, 40 client-chosen requests on the cheap model: the cheap
    # pass-through traffic is not randomised, so the router is never "compared" against it
    recs = [record(i, "router" if i % 2 else "always_strong", "strong") for i in range(80)]
    recs += [record(i, "passthrough", "weak").model_copy(update={"source": "passthrough"})
             for i in range(80, 120)]
    url = write_store(tmp_path / "t.db", recs, [(r.decision_id, 1.0) for r in recs])
    rep = _report(tmp_path, url)
    assert set(rep["arms"]) == {"router", "always_strong"}
    assert set(rep["comparisons"]) == {"always_strong"}
    assert "passthrough" not in str(rep["verdict"])
    assert rep["passthrough"]["requests"] == 40  # type: ignore[index]
    page = (tmp_path / "out" / "report.md").read_text()
    assert "Pass-through (client-chosen model, not randomised, not compared): 40 requests" in page
    only = write_store(tmp_path / "only.db", recs[1:2] + recs[80:],
                       [(r.decision_id, 1.0) for r in recs])
    assert _report(tmp_path, only)["verdict"] == (
        "not enough data: need the 'router' arm and one other, got ['router']")


@pytest.mark.parametrize("bad", [["--knob", "1.5"], ["--knob", "nan"], ["--knob", "-0.1"],
                                 ["--knob", "x"], ["--min-labeled", "0"],
                                 ["--min-labeled", "-3"], ["--min-labeled", "2.5"]])
def test_nonsense_parameters_exit_2(tmp_path: Path, bad: list[str],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    recs = [record(i, "router" if i % 2 else "always_strong", "strong") for i in range(8)]
    url = write_store(tmp_path / "t.db", recs, [("d1", 1.0)])  # always_strong has no label
    with pytest.raises(SystemExit) as info:
        main(["--db", url, "--out", str(tmp_path / "out"), *bad])
    assert info.value.code == 2 and bad[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_one_label_is_enough_only_where_there_is_one(tmp_path: Path) -> None:
    recs = [record(i, "router" if i % 2 else "always_strong", "strong") for i in range(8)]
    url = write_store(tmp_path / "t.db", recs, [("d1", 1.0)])
    out = tmp_path / "out"
    assert main(["--db", url, "--out", str(out), "--min-labeled", "1"]) == 0
    assert json.loads((out / "report.json").read_text())["verdict"] == (
        "not enough data: 1 labeled requests on 'router', 0 on 'always_strong' (need 1 each)")
