"""Reading the traffic store and the labelling rule of ``training.traffic``."""

from __future__ import annotations

from pathlib import Path

import pytest
from traffic_db import T0, record, write_store

from router_model.errors import InvalidData
from router_model.tiers import Tier
from training.traffic import label_from_outcomes, label_traffic, parse_since, read_decisions

TIERS = (Tier("weak", "w", 0.6, 0.6), Tier("strong", "s", 10.0, 30.0))


@pytest.mark.parametrize(
    ("outcomes", "n", "want"),
    [
        ({0: 1.0}, 2, 0),  # cheapest tier adequate
        ({0: 0.0}, 2, 1),  # weak failed: escalate one step
        ({1: 0.0}, 2, 0),  # the top tier failed: no tier helps, the cheapest
        ({1: 1.0}, 2, "unidentified"),  # would weak have done? unknown
        ({0: 0.0, 1: 1.0}, 2, 1),  # replay: exact
        ({0: 1.0, 1: 0.0}, 2, "conflicting"),
        ({0: 0.0, 2: 1.0}, 3, "unidentified"),  # the middle tier unseen
        ({0: 0.0, 1: 0.0}, 3, 2),
        ({1: 0.0, 2: 1.0}, 3, 2),
    ],
)
def test_label_rule(outcomes: dict[int, float], n: int, want: int | str) -> None:
    assert label_from_outcomes(outcomes, n, 0.5) == want


def test_read_and_label(tmp_path: Path) -> None:
    recs = [record(0, "router", "weak"), record(1, "router", "weak", sha="same"),
            record(2, "always_strong", "strong", sha="same"), record(3, "router", "strong"),
            record(4, "router", "weak", feature_version=999), record(5, "router", "weak")]
    url = write_store(tmp_path / "t.db", recs,
                      [("d0", 1.0), ("d1", 0.0), ("d2", 1.0), ("d3", 1.0), ("d4", 1.0)])
    decisions = read_decisions(url)
    assert [d.score for d in decisions] == [1.0, 0.0, 1.0, 1.0, 1.0, None]
    labels = label_traffic(decisions, TIERS, width=4, threshold=0.5)
    assert labels.labels.tolist() == [0, 1]  # p0 -> weak; 'same' -> strong (replayed)
    assert labels.scores.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert labels.complete == (False, True)  # p0's strong score is imputed; 'same' saw both
    assert labels.skipped == {"feature_mismatch": 1, "unidentified": 1}
    assert labels.X.shape == (2, 4)
    later = read_decisions(url, parse_since((T0.replace(second=3)).isoformat()))
    assert [d.record.decision_id for d in later] == ["d3", "d4", "d5"]


def test_rows_without_features_have_their_own_reason(tmp_path: Path) -> None:
    plain = record(0, "router", "weak")
    recs = [plain,
            plain.model_copy(update={"decision_id": "d1", "prompt_sha256": "p1",
                                     "source": "passthrough", "features": [],
                                     "feature_version": None}),
            plain.model_copy(update={"decision_id": "d2", "prompt_sha256": "p2",
                                     "features": [], "feature_version": None}),
            record(3, "router", "weak", feature_version=999)]
    url = write_store(tmp_path / "t.db", recs, [(f"d{i}", 1.0) for i in range(4)])
    labels = label_traffic(read_decisions(url), TIERS, width=4, threshold=0.5)
    assert labels.labels.tolist() == [0]
    assert labels.skipped == {"passthrough": 1, "no_features": 1, "feature_mismatch": 1}


def test_bad_input() -> None:
    with pytest.raises(InvalidData):
        parse_since("yesterday")
    with pytest.raises(InvalidData):
        read_decisions("sqlite:///nonexistent/x.db")
