"""Converters of the shipped sources, ``convert_all``/``tierwise convert``, tiers and fixtures."""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from router_model.errors import InvalidData
from router_model.tiers import load_tiers
from training.data import LabeledRow, read_labeled, select_tiers
from training.sources import (
    ROUTELLM_STRONG,
    ROUTELLM_WEAK,
    convert_all,
    convert_llmrouter,
    convert_mmlu_pro,
    convert_routellm_gsm8k,
    convert_routellm_mmlu,
    llmrouter_family,
    main,
    mmlu_origin,
    mmlu_pro_prompt,
    source_of,
)

REPO = Path(__file__).resolve().parents[3]
SOURCES = REPO / "data" / "sources"
FIXTURES = REPO / "data" / "fixtures"
TIERS = REPO / "data" / "tiers"

#: Documented sizes of the shipped sources (data/README.md).
COUNTS = {"routellm_mmlu": 11_762, "routellm_gsm8k": 1_319, "llmrouter": 5_608, "mmlu_pro": 9_654}


@pytest.fixture(scope="module")
def labeled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labeled")
    convert_all(SOURCES, out)
    return out


@pytest.fixture(scope="module")
def converted(labeled_dir: Path) -> dict[str, list[LabeledRow]]:
    return {name: read_labeled(labeled_dir / f"{name}.jsonl") for name in COUNTS}


def test_counts(converted: dict[str, list[LabeledRow]]) -> None:
    assert {k: len(v) for k, v in converted.items()} == COUNTS
    groups = {k: len({r.group for r in v}) for k, v in converted.items()}
    assert groups["routellm_mmlu"] == 47 and groups["routellm_gsm8k"] == 1
    assert groups["mmlu_pro"] == 12
    assert all(len({r.id for r in v}) == len(v) for v in converted.values())  # ids unique


def test_routellm_rows(converted: dict[str, list[LabeledRow]]) -> None:
    mmlu, gsm = converted["routellm_mmlu"], converted["routellm_gsm8k"]
    for rows in (mmlu, gsm):
        assert all(set(r.scores) == {ROUTELLM_WEAK, ROUTELLM_STRONG} for r in rows)
        assert {v for r in rows for v in r.scores.values()} == {0.0, 1.0}
    first = mmlu[0]
    assert (first.id, first.group) == ("mmlu/abstract_algebra/0", "mmlu/abstract_algebra")
    assert first.prompt.endswith("\nAnswer:")
    weak = sum(r.scores[ROUTELLM_WEAK] for r in mmlu) / len(mmlu)
    strong = sum(r.scores[ROUTELLM_STRONG] for r in gsm) / len(gsm)
    assert round(weak, 3) == 0.654 and round(strong, 3) == 0.857  # the README's figures
    assert gsm[0].id == "gsm8k/0" and gsm[0].prompt.startswith("Janet’s ducks")


def test_llmrouter_rows(converted: dict[str, list[LabeledRow]]) -> None:
    rows = converted["llmrouter"]
    assert all(len(r.scores) == 9 for r in rows)
    groups = Counter(r.group for r in rows)
    assert groups == {"llmrouter/cluster0": 1814, "llmrouter/cluster1": 1554,
                      "llmrouter/cluster2": 1228, "llmrouter/code": 662,
                      "llmrouter/math": 200, "llmrouter/logic": 150}


def test_llmrouter_family() -> None:
    assert llmrouter_family("Write a python function to add.", 0) == "llmrouter/code"
    assert llmrouter_family("\ndef f(x):\n    '''doc'''\n", 1) == "llmrouter/code"
    assert llmrouter_family("Q: There are 3 houses in a row", 1) == "llmrouter/logic"
    assert llmrouter_family("2+2?\nput you final answer in \\boxed{...}.", 2) == "llmrouter/math"
    assert llmrouter_family("who wrote hamlet", 2) == "llmrouter/cluster2"


def test_mmlu_pro_rows(converted: dict[str, list[LabeledRow]]) -> None:
    rows = converted["mmlu_pro"]
    first = rows[0]
    assert first.id == "mmlu_pro/ori_mmlu-business_ethics/70"
    assert first.group == "mmlu_pro/business" and len(first.scores) == 31
    assert first.prompt.startswith("Typical advertising")
    assert "\nI. Unsafe practices" in first.prompt
    assert Counter(len(r.scores) for r in rows) == {31: 8778, 30: 862, 29: 13, 28: 1}
    assert source_of(first) == "ori_mmlu-business_ethics"
    assert mmlu_origin(first) == "mmlu/business_ethics"
    origins = Counter(mmlu_origin(r) is not None for r in rows)
    assert origins[True] == 5386
    assert source_of(converted["routellm_mmlu"][0]) is None
    assert mmlu_origin(converted["routellm_mmlu"][0]) is None


def test_mmlu_pro_prompt_layout_matches_routellm() -> None:
    assert mmlu_pro_prompt("Q?", ["x", "y", "z"]) == "Q?\nA. x\nB. y\nC. z\nAnswer:"


@pytest.mark.parametrize(("tiers", "data", "skipped"), [
    ("routellm.yaml", "routellm_mmlu", 0),
    ("routellm.yaml", "routellm_gsm8k", 0),
    ("llmrouter.yaml", "llmrouter", 0),
    ("mmlu_pro.yaml", "mmlu_pro", 25),
])
def test_tiers_match_data(converted: dict[str, list[LabeledRow]], tiers: str, data: str,
                          skipped: int) -> None:
    ladder = load_tiers(TIERS / tiers)
    table = select_tiers(converted[data], [t.model for t in ladder], source=data)
    assert table.skipped == skipped


def test_fixtures_are_real_rows(converted: dict[str, list[LabeledRow]]) -> None:
    real = {r.id: r for rows in converted.values() for r in rows}
    for name, n in (("routellm_small.jsonl", 120), ("three_tier_small.jsonl", 120)):
        rows = read_labeled(FIXTURES / name)
        assert len(rows) == n and all(real[r.id or ""] == r for r in rows)
    small = read_labeled(FIXTURES / "routellm_small.jsonl")
    assert len({r.group for r in small if r.group != "gsm8k"}) >= 6
    three = read_labeled(FIXTURES / "three_tier_small.jsonl")
    table = select_tiers(three, [t.model for t in load_tiers(TIERS / "mmlu_pro.yaml")], source="f")
    assert table.skipped == 0


def test_convert_all_is_idempotent(labeled_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    stamp = json.loads((labeled_dir / "llmrouter.jsonl.source.json").read_text())
    assert stamp["rows"] == COUNTS["llmrouter"]
    with caplog.at_level(logging.INFO, logger="training.sources"):
        paths = convert_all(SOURCES, labeled_dir)
    assert set(paths) == set(COUNTS) and caplog.text.count("up to date") == 4
    assert not [p for p in labeled_dir.iterdir() if p.name.endswith(".tmp")]


def test_edited_output_is_rewritten(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "routellm" / "mmlu").mkdir(parents=True)
    (src / "routellm" / "gsm8k").mkdir()
    (src / "llmrouter").mkdir()
    (src / "mmlu_pro").mkdir()
    for rel in ("routellm/mmlu/mmlu_anatomy.csv", "routellm/gsm8k/gsm8k_responses.csv"):
        (src / rel).write_bytes((SOURCES / rel).read_bytes())
    # the first real items of the two large sources keep this test fast
    items = json.loads((SOURCES / "llmrouter" / "train.json").read_text(encoding="utf-8"))[:20]
    (src / "llmrouter" / "train.json").write_text(json.dumps(items), encoding="utf-8")
    with gzip.open(SOURCES / "mmlu_pro" / "mmlu_pro_outputs.jsonl.gz", "rb") as fh:
        head = b"".join(fh.readline() for _ in range(20))
    (src / "mmlu_pro" / "mmlu_pro_outputs.jsonl.gz").write_bytes(gzip.compress(head))
    out = tmp_path / "out"
    assert len(read_labeled(convert_all(src, out)["mmlu_pro"])) == 20
    target = out / "routellm_mmlu.jsonl"
    good = target.read_bytes()
    target.write_text("edited\n")
    convert_all(src, out)
    assert target.read_bytes() == good and len(read_labeled(target)) == 135


def test_main_smoke(labeled_dir: Path, tmp_path: Path) -> None:
    assert main(["--sources", str(SOURCES), "--out", str(labeled_dir)]) == 0
    assert main(["--sources", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 1
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0


def test_bad_csv_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mmlu_x.csv"
    header = f"prompt,{ROUTELLM_WEAK},{ROUTELLM_STRONG}\n"
    path.write_text(header + '"two\nlines",True,False\nq,maybe,True\n', encoding="utf-8")
    with pytest.raises(InvalidData, match=rf"{path}:4: correctness must be True or False"):
        convert_routellm_mmlu(tmp_path)
    path.write_text("prompt,other\nq,True\n", encoding="utf-8")
    with pytest.raises(InvalidData, match=rf"{path}:1: header lacks columns"):
        convert_routellm_gsm8k(path)
    with pytest.raises(InvalidData, match="no mmlu_<domain>.csv"):
        convert_routellm_mmlu(tmp_path / "empty")


def test_bad_llmrouter_json_names_line(tmp_path: Path) -> None:
    good = {"question": "q", "scores": {"m": 1.0}, "cluster_id": 0}
    bad = {"question": "", "scores": {"m": 1.0}, "cluster_id": 0}
    path = tmp_path / "train.json"
    path.write_text(json.dumps([good, good, bad], indent=1), encoding="utf-8")
    assert len(json.dumps(good, indent=1).splitlines()) == 7
    with pytest.raises(InvalidData, match=rf"{path}:16: 'prompt' is empty"):
        convert_llmrouter(path)
    path.write_text('[{"question": "q", "scores": {"m": 1}, "cluster_id": 0},\n{"q": ', "utf-8")
    with pytest.raises(InvalidData, match=rf"{path}:2: bad JSON"):
        convert_llmrouter(path)
    path.write_text('[{"question": "q", "scores": {"m": 1}, "cluster_id": "0"}]', "utf-8")
    with pytest.raises(InvalidData, match="cluster_id"):
        convert_llmrouter(path)


def test_bad_mmlu_pro_line(tmp_path: Path) -> None:
    ok = {"question_id": 1, "category": "law", "src": "ori_mmlu-x", "question": "q",
          "options": ["a", "b"], "answer": "A", "correct": {"m": 1.0}}
    lines = [json.dumps(ok), json.dumps({**ok, "options": "ab"})]
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(InvalidData, match=rf"{path}:2: 'options'"):
        convert_mmlu_pro(path)
    path.write_bytes(gzip.compress(json.dumps(ok).encode()))
    assert convert_mmlu_pro(path)[0].id == "mmlu_pro/ori_mmlu-x/1"
