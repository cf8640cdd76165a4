"""The judge's prompt, ``Rating: [[N]]`` parsing and the (N - 1) / 9 score."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_model.errors import InvalidData
from router_model.judge import judge_prompt, load_template, parse_rating, rating_score


@pytest.mark.parametrize(("reply", "want"), [
    ("Good answer. Rating: [[8]]", 8),
    ("rating: [[ 10 ]]", 10),
    ("Rating: [[3]] ... on reflection Rating: [[4]]", 4),  # the last verdict counts
    ("Rating: [[7.5]]", 7),
    ("I would give it an 8.", None),
    ("Rating: [[0]]", None),
    ("Rating: [[11]]", None),
    ("", None),
])
def test_parse_rating(reply: str, want: int | None) -> None:
    assert parse_rating(reply) == want


def test_rating_score_maps_one_to_ten_onto_zero_to_one() -> None:
    assert rating_score(1) == 0.0
    assert rating_score(10) == 1.0
    assert rating_score(4) == pytest.approx(1 / 3)
    with pytest.raises(InvalidData):
        rating_score(0)


def test_prompt_with_and_without_reference() -> None:
    with_ref = judge_prompt("What is {x}?", "forty-two", "42")
    assert "What is {x}?" in with_ref and "forty-two" in with_ref
    assert "[The Start of Reference Answer]\n42\n" in with_ref
    assert "Reference Answer" not in judge_prompt("q", "a", None)
    assert "Rating: [[5]]" in with_ref  # the verdict format the parser reads


def test_template_file_must_name_every_field(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Q={question} A={answer} R={reference} end with Rating: [[N]]")
    template = load_template(good)
    assert judge_prompt("q", "a", None, template) == "Q=q A=a R= end with Rating: [[N]]"
    bad = tmp_path / "bad.txt"
    bad.write_text("Q={question} A={answer}")
    with pytest.raises(InvalidData, match="reference"):
        load_template(bad)
    with pytest.raises(InvalidData, match="cannot read"):
        load_template(tmp_path / "missing.txt")
