"""Judge labels (shadow calls graded by an LLM judge) in ``training.traffic``'s labelling."""

from __future__ import annotations

from pathlib import Path

from traffic_db import add_judge_labels, record, write_store

from router_model.records import JudgeLabel
from router_model.tiers import Tier
from training.traffic import label_traffic, read_decisions

TIERS = (Tier("weak", "w", 0.6, 0.6), Tier("strong", "s", 10.0, 30.0))


def grade(decision_id: str, tier: str, rating: int) -> JudgeLabel:
    return JudgeLabel(decision_id=decision_id, tier=tier, model=tier[0], score=(rating - 1) / 9,
                      rating=rating, judge="strong", cost_usd=0.001)


def test_judge_scores_of_every_tier_give_the_exact_label(tmp_path: Path) -> None:
    # d0: strong answered, client said fine (unidentified alone); the judge says weak did too
    # d1: weak answered, no feedback; the judge says weak failed, strong did not
    # d2: judge graded one tier only (strong fine): unidentified, as feedback alone would be
    # d3: weak answered, client said bad, judge said weak fine: the client's word wins
    recs = [record(i, "router", t) for i, t in enumerate(["strong", "weak", "strong", "weak"])]
    url = write_store(tmp_path / "t.db", recs, [("d0", 1.0), ("d3", 0.0)])
    add_judge_labels(url, [grade("d0", "weak", 9), grade("d0", "strong", 10),
                           grade("d1", "weak", 2), grade("d1", "strong", 9),
                           grade("d2", "strong", 10),
                           grade("d3", "weak", 10), grade("d3", "strong", 10)])
    decisions = read_decisions(url)
    assert decisions[1].score is None and decisions[1].judge["strong"] == 8 / 9
    labels = label_traffic(decisions, TIERS, width=4, threshold=0.5, tolerance=0.05)
    assert labels.prompt_sha256 == ("p0", "p1", "p3")
    assert labels.labels.tolist() == [1, 1, 1]  # d0: 8/9 < 1 - 0.05; d3: the client's 0
    assert labels.sources == ("judge+feedback", "judge", "judge+feedback")
    assert labels.scores[1].tolist() == [1 / 9, 8 / 9]
    assert labels.skipped == {"unidentified": 1}
    loose = label_traffic(decisions, TIERS, width=4, threshold=0.5, tolerance=0.2)
    assert loose.labels.tolist() == [0, 1, 1]  # within the tolerance weak is adequate


def test_a_store_without_the_judge_table_reads_as_no_judge_labels(tmp_path: Path) -> None:
    url = write_store(tmp_path / "old.db", [record(0, "router", "weak")], [("d0", 1.0)])
    [decision] = read_decisions(url)
    assert decision.judge == {} and decision.score == 1.0
