"""The evidence rule of the retrain gate (``training.retrain_gate.evidence``) and the overlap of
an evaluation file with the retrain's training rows (``eval_overlap``, ``check_overlap``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_model.errors import InvalidData
from router_model.router import prompt_digest
from training.data import LabeledRow
from training.retrain_gate import MAX_EVAL_OVERLAP, check_overlap, eval_overlap, evidence


def _rows(*prompts: str, ids: tuple[str, ...] = ()) -> list[LabeledRow]:
    return [LabeledRow(prompt=p, scores={"a": 1.0}, id=ids[i] if ids else None)
            for i, p in enumerate(prompts)]


@pytest.mark.parametrize(
    ("rows", "ci", "require_ci", "want"),
    [
        (500, [-0.01, 0.02], False, True),
        (5, [-0.01, 0.02], False, False),  # too few frozen rows, whatever the interval
        (5, [-0.01, 0.02], True, False),
        (500, [-0.01, 0.02], True, True),  # lower bound >= -margin (0.05)
        (500, [-0.09, -0.06], True, False),
        (500, [0.0, 0.0], True, False),  # zero width: the resamples never disagreed
        (500, None, True, False),  # undefined
        (500, None, False, True),  # without --require-ci only reported
    ],
)
def test_evidence(rows: int, ci: list[float] | None, require_ci: bool, want: bool) -> None:
    ok, reasons = evidence(rows, 200, ci, 0.05, require_ci)
    assert ok is want
    assert reasons[0].startswith(f"frozen: {rows} rows (at least 200 needed to promote)")
    assert any("paired 95% CI" in r for r in reasons)


def test_eval_overlap_counts_evaluation_rows_and_keeps_the_other_training_rows() -> None:
    evaluation = _rows("What is 2+2?", "Name a prime.", "Define entropy.", "Say hi.")
    base = _rows("what is 2+2?", "Name  a\tprime. ", "Unrelated.")  # case counts, spaces do not
    hidden = "Define entropy."  # a traffic row stored without its text: its digest stands in
    traffic = _rows("Say hi.\n", f"sha256:{prompt_digest(hidden)}", "Other.",
                    ids=("p1", prompt_digest(hidden), "p3"))
    o = eval_overlap(evaluation, base, traffic)
    assert (o.eval_rows, o.base, o.traffic, o.shared) == (4, 1, 2, 3)
    assert o.share == 0.75
    assert o.keep_base == (0, 2) and o.keep_traffic == (2,)
    none = eval_overlap(evaluation, _rows("x"), [])
    assert (none.shared, none.keep_base, none.keep_traffic) == (0, (0,), ())
    check_overlap(none, Path("eval.jsonl"))  # disjoint: nothing to say


def test_check_overlap_refuses_from_the_documented_share(caplog: pytest.LogCaptureFixture) -> None:
    n = round(1 / MAX_EVAL_OVERLAP)  # 20 rows: one shared prompt is exactly 5%
    evaluation = _rows(*(f"prompt {i}" for i in range(n)))
    with pytest.raises(InvalidData, match=r"1 of its 20 rows \(5\.0%\) .*\(1 in --base-data, "
                                          r"0 in the labeled traffic\), at least 5%"):
        check_overlap(eval_overlap(evaluation, _rows("prompt 3"), []), Path("eval.jsonl"))
    bigger = eval_overlap([*evaluation, *_rows("one more")], [], _rows("prompt 3"))
    check_overlap(bigger, Path("eval.jsonl"))  # 1 of 21: under 5%, a warning
    assert "1 of its 21 rows (4.8%)" in caplog.text and "removed" in caplog.text
