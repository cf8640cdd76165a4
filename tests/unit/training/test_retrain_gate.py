"""The evidence rule of the retrain gate (``training.retrain_gate.evidence``)."""

from __future__ import annotations

import pytest

from training.retrain_gate import evidence


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
