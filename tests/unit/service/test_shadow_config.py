"""The ``shadow`` section of the gateway config: off by default, the judge must be a tier."""

from __future__ import annotations

from typing import Any

import pytest

from router_model.errors import InvalidData
from service.gateway.config import parse_gateway_config


def doc(**shadow: Any) -> dict[str, Any]:
    tier = {"base_url": "http://127.0.0.1:1/v1", "api_key_env": "K", "input_price": 1,
            "output_price": 1}
    return {"tiers": [{"name": "weak", "model": "w", **tier}, {"name": "strong", "model": "s",
                                                               **tier}],
            "default_tier": "weak", **({"shadow": shadow} if shadow else {})}


def test_off_by_default() -> None:
    config = parse_gateway_config(doc())
    assert config.shadow.rate == 0 and config.judge_tier() is None


def test_the_judge_is_a_tier_name_or_model() -> None:
    assert parse_gateway_config(doc(rate=0.02, judge="s")).judge_tier() == "strong"
    with pytest.raises(InvalidData, match="not a tier's name or model"):
        parse_gateway_config(doc(rate=0.02, judge="gpt-5"))
    with pytest.raises(InvalidData, match="shadow.judge is required"):
        parse_gateway_config(doc(rate=0.5))
    with pytest.raises(InvalidData, match="shadow.rate"):
        parse_gateway_config(doc(rate=1.5, judge="strong"))
