"""Tier ladders: YAML loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_model.errors import InvalidData
from router_model.tiers import Tier, load_tiers, validate_tiers

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["routellm", "mmlu_pro", "llmrouter"])
def test_shipped_tiers_load(name: str) -> None:
    tiers = load_tiers(REPO / "data" / "tiers" / f"{name}.yaml")
    assert len(tiers) >= 2
    assert [t.cost(1000) for t in tiers] == sorted(t.cost(1000) for t in tiers)


def test_cost_formula() -> None:
    t = Tier("x", "m", input_price=2.0, output_price=10.0)
    assert t.cost(1000, 500) == pytest.approx((1000 * 2 + 500 * 10) / 1e6)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("tiers: [{name: a, model: m, input_price: 1, output_price: 1}]", "at least two"),
        ("tiers: [{name: a, model: m, input_price: 2, output_price: 2},"
         " {name: b, model: n, input_price: 1, output_price: 1}]", "ordered by price"),
        ("tiers: [{name: a, model: m, input_price: 1, output_price: 1},"
         " {name: a, model: n, input_price: 1, output_price: 1}]", "unique"),
        ("tiers: [{name: a, model: m}, {name: b, model: n}]", "needs name"),
        ("nope: 1", "expected a mapping"),
        ("tiers: [", "cannot read"),
        ("tiers: [{name: a, model: m, input_price: .nan, output_price: 1},"
         " {name: b, model: n, input_price: 1, output_price: 1}]", "not a finite number"),
        ("tiers: [{name: a, model: m, input_price: 1, output_price: 1},"
         " {name: b, model: n, input_price: .inf, output_price: 1}]", "not a finite number"),
        ("tiers: [{name: a, model: m, input_price: 1, output_price: 1},"
         " {name: , model: n, input_price: 1, output_price: 1}]", "needs name"),
        ("tiers: [{name: a, model: m, input_price: 1, output_price: 1},"
         " {name: ' ', model: n, input_price: 1, output_price: 1}]", "non-empty name"),
        ("tiers: [{name: a, model: m, input_price: 1, output_price: 1, extra: 1},"
         " {name: b, model: n, input_price: 1, output_price: 1}]", "unknown field.s. .'extra'"),
        ("tiers: [{name: a, model: m, input_price: true, output_price: 1},"
         " {name: b, model: n, input_price: 1, output_price: 1}]", "needs name"),
        ("tiers: [{name: a, model: m, input_price: '1', output_price: 1},"
         " {name: b, model: n, input_price: 1, output_price: 1}]", "needs name"),
        ("tiers: [a, b]", "must be a mapping"),
    ],
)
def test_bad_tiers_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(text)
    with pytest.raises(InvalidData, match=match) as exc:
        load_tiers(path)
    assert str(path) in str(exc.value)


def test_validate_rejects_negative_price() -> None:
    with pytest.raises(InvalidData, match="negative"):
        validate_tiers([Tier("a", "m", -1, 0), Tier("b", "n", 1, 1)])


def test_tiers_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes("tiers: [{name: caf\xe9}]".encode("latin-1"))
    with pytest.raises(InvalidData, match="cannot read tiers file"):
        load_tiers(path)
