"""Model tiers: the price-ordered ladder a router chooses from, and its YAML file format."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from router_model.errors import InvalidData

#: The fields of one tier in a tiers file, in order.
TIER_FIELDS = ("name", "model", "input_price", "output_price")

#: Output tokens assumed per call when a cost must be estimated before the answer exists.
DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True)
class Tier:
    """One tier: a name the API uses, the upstream model name, and list prices (USD / 1M tokens)."""

    name: str
    model: str
    input_price: float
    output_price: float

    def cost(self, input_tokens: float, output_tokens: float = DEFAULT_OUTPUT_TOKENS) -> float:
        """Estimated USD cost of one call with these token counts."""
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6


def validate_tiers(tiers: Sequence[Tier], *, source: str = "tiers") -> tuple[Tier, ...]:
    """Check a tier ladder: two or more, unique names and models, non-decreasing price.

    Raises:
        InvalidData: with ``source`` in the message when the ladder is malformed.
    """
    if len(tiers) < 2:
        raise InvalidData(f"{source}: need at least two tiers, got {len(tiers)}")
    for field in ("name", "model"):
        values = [getattr(t, field) for t in tiers]
        if len(set(values)) != len(values):
            raise InvalidData(f"{source}: tier {field}s must be unique, got {values}")
    for t in tiers:
        if not t.name.strip() or not t.model.strip():
            raise InvalidData(f"{source}: every tier needs a non-empty name and model")
        prices = (t.input_price, t.output_price)
        if not all(math.isfinite(p) for p in prices):
            raise InvalidData(f"{source}: tier {t.name!r} has a price that is not a finite number")
        if any(p < 0 for p in prices):
            raise InvalidData(f"{source}: tier {t.name!r} has a negative price")
    costs = [t.cost(1000) for t in tiers]
    if any(b < a for a, b in zip(costs, costs[1:], strict=False)):
        raise InvalidData(f"{source}: tiers must be ordered by price, cheapest first")
    return tuple(tiers)


def tiers_from_dicts(items: Any, *, source: str = "tiers") -> tuple[Tier, ...]:
    """Build a validated ladder from a list of mappings (YAML or JSON).

    Raises:
        InvalidData: when an item lacks a field or has the wrong type.
    """
    if not isinstance(items, list):
        raise InvalidData(f"{source}: 'tiers' must be a list")
    tiers = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidData(f"{source}: tier #{i} must be a mapping, got {type(item).__name__}")
        unknown = sorted(set(map(str, item)) - set(TIER_FIELDS))
        if unknown:
            raise InvalidData(f"{source}: tier #{i} has unknown field(s) {unknown}; "
                              f"a tier has {list(TIER_FIELDS)}")
        try:
            name, model = item["name"], item["model"]
            if not isinstance(name, str) or not isinstance(model, str):
                raise TypeError("name and model must be strings")
            prices = [item["input_price"], item["output_price"]]
            if any(isinstance(p, bool) or not isinstance(p, int | float) for p in prices):
                raise TypeError("prices must be numbers")
            tiers.append(Tier(name=name, model=model, input_price=float(prices[0]),
                              output_price=float(prices[1])))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidData(
                f"{source}: tier #{i} needs name, model, input_price, output_price ({exc!r})"
            ) from exc
    return validate_tiers(tiers, source=source)


def load_tiers(path: Path) -> tuple[Tier, ...]:
    """Read a tiers YAML file (``tiers:`` list, cheapest first).

    Raises:
        InvalidData: when the file is missing, not YAML, or malformed.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidData(f"{path}: cannot read tiers file ({exc})") from exc
    if not isinstance(doc, dict) or "tiers" not in doc:
        raise InvalidData(f"{path}: expected a mapping with a 'tiers' list")
    return tiers_from_dicts(doc["tiers"], source=str(path))


def ladder_order(names: Sequence[str], start: str) -> list[str]:
    """``start``, then the tiers above it nearest first, then those below it nearest first."""
    i = list(names).index(start)
    return [names[i], *names[i + 1 :], *reversed(names[:i])]
