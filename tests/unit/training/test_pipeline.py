"""The default operating point: chosen by target PGR, and what it does in each report."""

from __future__ import annotations

import numpy as np
import pytest

from training.pipeline import knob_for_pgr
from training.report import build_report

# Two tiers, four prompts (as in test_evaluate): weak quality 0.5, strong 0.75, gap 0.25.
#   prompt  weak strong  P(weak adequate)
#   p0      1    1       0.6
#   p1      0    1       0.1
#   p2      0    1       0.2
#   p3      1    0       0.9
S2 = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
C2 = np.array([[1.0, 3.0]] * 4)
P2 = np.array([[0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.9, 0.1]])


def test_knob_for_pgr_is_the_cheapest_knob_that_reaches_the_target() -> None:
    # knob 0.1: nobody goes strong (PGR 0); 0.2: p1 goes strong, quality 0.75 (PGR 1) at cost
    # 1.5; 0.6: p1 and p2, quality 1 (PGR 2) at cost 2; higher knobs cost more, none does better
    assert knob_for_pgr(S2, C2, P2, 0.8) == pytest.approx(0.2)
    assert knob_for_pgr(S2, C2, P2, 1.5) == pytest.approx(0.6)
    assert knob_for_pgr(S2, C2, P2, 0.0) == pytest.approx(0.1)  # free: the highest all-weak knob
    assert knob_for_pgr(S2, C2, P2, 2.5) == 1.0  # unreachable: always the top tier


def test_report_shows_what_the_default_knob_does() -> None:
    point = build_report(S2, C2, ["small", "large"], P2, default_knob=0.2)["at_default_knob"]
    assert point["knob"] == 0.2
    assert (point["cost"], point["quality"], point["strong_share"]) == pytest.approx(
        (1.5, 0.75, 0.25))
    assert point["tier_shares"] == [0.75, 0.25]
    assert point["pgr"] == pytest.approx(1.0)
    assert "at_default_knob" not in build_report(S2, C2, ["small", "large"], P2)
