"""The labeled-data format: strict loading, tier selection, labels, splits, atomic writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from router_model.errors import InvalidData
from router_model.tiers import Tier, load_tiers
from training.data import (
    LabeledRow,
    cheapest_adequate,
    data_sha256,
    dedupe,
    estimate_costs,
    group_split,
    random_split,
    read_labeled,
    row_to_dict,
    select_tiers,
    table_costs,
    write_labeled,
)

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "data" / "fixtures"
ROUTELLM = ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")


@pytest.fixture(scope="module")
def small() -> list[LabeledRow]:
    return read_labeled(FIXTURES / "routellm_small.jsonl")


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_fixture(small: list[LabeledRow]) -> None:
    assert len(small) == 120
    assert all(set(r.scores) == set(ROUTELLM) for r in small)
    assert all(r.id and r.group and r.cost is None for r in small)
    assert len({r.group for r in small}) == 9


def test_round_trip_plain_and_gzip(tmp_path: Path, small: list[LabeledRow]) -> None:
    rows = [*small[:3], LabeledRow("p", {"m": 0.5}, cost={"m": 0.001})]
    for name in ("out.jsonl", "out.jsonl.gz"):
        assert write_labeled(rows, tmp_path / name) == 4
        assert read_labeled(tmp_path / name) == rows
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_labeled(rows, a)
    write_labeled(rows, b)
    assert a.read_bytes() == b.read_bytes()  # fixed gzip timestamp: reproducible hashes


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "x.jsonl", ["", '{"prompt": "a", "scores": {"m": 1}}', "  "])
    assert read_labeled(path) == [LabeledRow("a", {"m": 1.0})]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("bad_json.jsonl", "bad JSON"),
        ("missing_prompt.jsonl", "'prompt' is missing"),
        ("empty_prompt.jsonl", "'prompt' is empty"),
        ("score_out_of_range.jsonl", r"outside \[0, 1\]"),
        ("not_an_object.jsonl", "expected a JSON object"),
    ],
)
def test_bad_fixtures_name_file_and_line(name: str, match: str) -> None:
    path = FIXTURES / "bad" / name
    with pytest.raises(InvalidData, match=match) as info:
        read_labeled(path)
    assert f"{path}:3:" in str(info.value)  # line 2 is blank and still counts


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"prompt": 7, "scores": {"m": 1}}', "'prompt' must be a string"),
        ('{"prompt": "  \\n ", "scores": {"m": 1}}', "'prompt' is empty"),
        ('{"prompt": "p"}', "'scores' must be a non-empty object"),
        ('{"prompt": "p", "scores": {}}', "'scores' must be a non-empty object"),
        ('{"prompt": "p", "scores": [1]}', "'scores' must be a non-empty object"),
        ('{"prompt": "p", "scores": {"m": NaN}}', "finite number"),
        ('{"prompt": "p", "scores": {"m": true}}', "finite number"),
        ('{"prompt": "p", "scores": {"m": "1"}}', "finite number"),
        ('{"prompt": "p", "scores": {"m": -0.1}}', "outside"),
        ('{"prompt": "p", "scores": {"": 1}}', "empty model name"),
        ('{"prompt": "p", "scores": {"m": 1}, "cost": {"m": -1e-6}}', "outside >= 0"),
        ('{"prompt": "p", "scores": {"m": 1}, "id": 3}', "'id' must be a string"),
        ('{"prompt": "p", "scores": {"m": 1}, "grop": "g"}', "unknown keys"),
    ],
)
def test_malformed_lines(tmp_path: Path, line: str, match: str) -> None:
    ok = '{"prompt": "fine", "scores": {"m": 0.5}, "group": null}'
    path = _write_lines(tmp_path / "rows.jsonl", [ok, ok, line, ok])
    with pytest.raises(InvalidData, match=match) as info:
        read_labeled(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "a", "scores": {"m": 1}}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InvalidData, match=rf"{path}:2: not UTF-8"):
        read_labeled(path)
    with pytest.raises(InvalidData, match="nope.jsonl"):
        read_labeled(tmp_path / "nope.jsonl")


def test_select_tiers_skips_and_ignores_other_models(small: list[LabeledRow]) -> None:
    others = read_labeled(FIXTURES / "bad" / "no_tier_models.jsonl")
    table = select_tiers([*small, *others], ROUTELLM, source="mixed")
    assert table.skipped == len(others) == 3
    assert table.scores.shape == (120, 2) and table.tier_models == ROUTELLM
    assert table.costs is None
    first = small[0]
    assert table.scores[0].tolist() == [first.scores[ROUTELLM[0]], first.scores[ROUTELLM[1]]]
    one = select_tiers(small, ROUTELLM[1:], source="one")  # the other model is ignored
    assert one.scores.shape == (120, 1) and one.skipped == 0


def test_select_tiers_none_match_names_models() -> None:
    others = read_labeled(FIXTURES / "bad" / "no_tier_models.jsonl")
    with pytest.raises(InvalidData, match=r"^llm: none of the rows .*models present: \[") as info:
        select_tiers(others, ROUTELLM, source="llm")
    assert "gemma-2-9b-it" in str(info.value) and ROUTELLM[1] in str(info.value)


def test_select_tiers_on_no_rows_says_so() -> None:
    with pytest.raises(InvalidData, match=r"^empty.jsonl: no rows"):
        select_tiers([], ROUTELLM, source="empty.jsonl")


def test_real_costs_when_present() -> None:
    tiers = (Tier("a", "m1", 1.0, 2.0), Tier("b", "m2", 10.0, 20.0))
    full = [LabeledRow("p", {"m1": 1, "m2": 1}, cost={"m1": 0.5, "m2": 0.7}) for _ in range(2)]
    table = select_tiers(full, ["m1", "m2"], source="s")
    assert table.costs is not None and table.costs.tolist() == [[0.5, 0.7], [0.5, 0.7]]
    mixed = [*full[:1], LabeledRow("q", {"m1": 0, "m2": 1})]
    table = select_tiers(mixed, ["m1", "m2"], source="s")
    assert table.costs is None
    costs = table_costs(table, np.array([100, 1000]), tiers)
    assert costs[0].tolist() == [0.5, 0.7]  # real cost kept
    assert costs[1].tolist() == pytest.approx([tiers[0].cost(1000), tiers[1].cost(1000)])
    with pytest.raises(ValueError):
        table_costs(table, np.array([1, 2]), tiers[::-1])


def test_estimate_costs_matches_tier_cost() -> None:
    tiers = load_tiers(REPO / "data" / "tiers" / "mmlu_pro.yaml")
    got = estimate_costs(np.array([0, 37, 5000]), tiers, output_tokens=100)
    want = [[t.cost(n, 100) for t in tiers] for n in (0, 37, 5000)]
    assert got.shape == (3, 3)
    assert got.ravel().tolist() == pytest.approx(np.ravel(want).tolist())


def test_cheapest_adequate_hand_examples() -> None:
    scores = np.array([
        [1.0, 1.0, 1.0],   # tie: cheapest
        [0.0, 1.0, 1.0],   # tie between the two dearer: the cheaper of them
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0],   # nobody right: paying more buys nothing
        [0.6, 0.62, 0.9],
        [0.5, 0.62, 0.64],
    ])
    assert cheapest_adequate(scores).tolist() == [0, 1, 2, 0, 2, 2]
    assert cheapest_adequate(scores, tolerance=0.05).tolist() == [0, 1, 2, 0, 2, 1]
    assert cheapest_adequate(scores, tolerance=0.3).tolist() == [0, 1, 2, 0, 0, 0]
    assert cheapest_adequate(scores).dtype == np.int64
    with pytest.raises(ValueError):
        cheapest_adequate(scores, tolerance=-0.1)
    with pytest.raises(ValueError):
        cheapest_adequate(np.array([1.0, 0.0]))


def test_dedupe_normalises_whitespace(caplog: pytest.LogCaptureFixture) -> None:
    rows = [LabeledRow("a  b\n", {"m": 1}, id="1"), LabeledRow(" a b", {"m": 0}, id="2"),
            LabeledRow("a c", {"m": 0}, id="3")]
    with caplog.at_level(logging.INFO, logger="training.data"):
        assert [r.id for r in dedupe(rows)] == ["1", "3"]
    assert "dropped 1 duplicate" in caplog.text


def test_group_split_no_overlap_and_deterministic(small: list[LabeledRow]) -> None:
    train, test = group_split(small, test_fraction=0.2, seed=7)
    assert sorted(train + test) == list(range(len(small)))
    assert not {small[i].group for i in train} & {small[i].group for i in test}
    assert 0 < len(test) <= 0.2 * len(small)
    assert group_split(small, test_fraction=0.2, seed=7) == (train, test)
    # order-independent: the same rows reversed give the same test rows
    rev = small[::-1]
    _, rev_test = group_split(rev, test_fraction=0.2, seed=7)
    assert {rev[i].id for i in rev_test} == {small[i].id for i in test}
    splits = {tuple(group_split(small, seed=s)[1]) for s in range(5)}
    assert len(splits) > 1


def test_group_split_with_test_groups(small: list[LabeledRow]) -> None:
    extra = LabeledRow("ungrouped", {ROUTELLM[0]: 1.0, ROUTELLM[1]: 1.0})
    rows = [*small, extra]
    train, test = group_split(rows, test_groups={"gsm8k", "mmlu/anatomy"}, seed=0)
    assert {rows[i].group for i in test} == {"gsm8k", "mmlu/anatomy"} and len(test) == 36
    assert len(rows) - 1 in train
    with pytest.raises(InvalidData, match="non-empty"):
        group_split(rows, test_groups={"no/such/group"}, seed=0)


def test_group_split_ungrouped_rows_and_errors() -> None:
    rows = [LabeledRow(f"prompt {i}", {"m": 1.0}) for i in range(50)]
    train, test = group_split(rows, test_fraction=0.3, seed=1)
    assert len(test) == 15 and len(train) == 35
    with pytest.raises(InvalidData):
        group_split([LabeledRow("p", {"m": 1}, group="g")] * 3, seed=0)
    with pytest.raises(ValueError):
        group_split(rows, test_fraction=1.0, seed=0)


def test_random_split() -> None:
    rest, held = random_split(100, 0.25, seed=3)
    assert len(held) == 25 and sorted(rest + held) == list(range(100))
    assert random_split(100, 0.25, seed=3) == (rest, held)
    assert random_split(2, 0.01, seed=0)[1] != []
    with pytest.raises(ValueError):
        random_split(1, 0.5, seed=0)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_labeled([LabeledRow("old", {"m": 1.0})], path)
    before = path.read_bytes()

    def broken() -> list[LabeledRow]:
        raise RuntimeError("row source failed")

    with pytest.raises(RuntimeError):
        write_labeled((r for r in broken()), path)
    assert path.read_bytes() == before
    target = tmp_path / "is_a_dir.jsonl"
    target.mkdir()
    with pytest.raises(OSError):  # os.replace onto a directory fails after the temp was written
        write_labeled([LabeledRow("new", {"m": 1.0})], target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is_a_dir.jsonl", "rows.jsonl"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_data_sha256(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "sub_c"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    c.write_bytes(b"one")
    assert data_sha256([a, b]) == data_sha256([c, b])  # bytes count, names do not
    assert data_sha256([a, b]) != data_sha256([b, a])
    assert len(data_sha256([a])) == 64
    with pytest.raises(InvalidData, match="missing"):
        data_sha256([tmp_path / "missing"])


def test_row_to_dict_omits_unset() -> None:
    row = LabeledRow("p", {"m": 1.0}, group="g")
    assert json.dumps(row_to_dict(row)) == '{"prompt": "p", "scores": {"m": 1.0}, "group": "g"}'


def test_group_split_with_only_big_groups() -> None:
    rows = [LabeledRow(f"p{i}", {"m": 1.0}, group=f"g{i % 3}") for i in range(30)]
    train, test = group_split(rows, test_fraction=0.2, seed=0)
    assert len(test) == 10 and len({rows[i].group for i in test}) == 1
