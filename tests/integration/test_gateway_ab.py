"""A/B arms: sticky assignment by user or session id, fixed arms, recorded arm and propensity."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (  # noqa: F401  (fixtures)
    ADMIN_KEY,
    EASY,
    STRONG,
    Gateway,
    make_gateway_fixture,
    upstreams_fixture,
)

from service.gateway.levers.ab import Arm, ArmAssigner

SALT = "exp-2026-11"
AB = {"salt": SALT, "arms": [{"name": "router", "weight": 0.75},
                             {"name": "always_strong", "tier": "strong", "weight": 0.25}]}


def ask(gw: Gateway, **kwargs: Any) -> Any:
    raw = gw.client().chat.completions.with_raw_response.create(
        model="tierwise-auto", messages=[{"role": "user", "content": EASY}],
        extra_body={"tierwise": {"quality": 0.0}}, **kwargs,
    )
    return raw, raw.parse()


def traffic(gw: Gateway) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(gw.config.traffic.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        return {r["decision_id"]: dict(r) for r in conn.execute("SELECT * FROM traffic")}


def test_arms_are_sticky_and_recorded(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle, ab=AB)
    expected = ArmAssigner([Arm("router", None, 0.75), Arm("always_strong", "strong", 0.25)], SALT)
    arms: dict[str, str] = {}
    for i in range(24):
        user = f"user-{i}"
        for how in ("body", "header", "session"):
            kwargs: dict[str, Any] = {"user": user} if how == "body" else {
                "extra_headers": {"x-tierwise-user" if how == "header" else "x-session-id": user}}
            raw, body = ask(gw, **kwargs)
            arm = raw.headers["x-tierwise-arm"]
            assert arms.setdefault(user, arm) == arm  # the same user always gets the same arm
            assert body.model_extra["tierwise"]["arm"] == arm
            if arm == "always_strong":  # the fixed arm overrides the router (quality 0 -> weak)
                assert raw.headers["x-tierwise-tier"] == "strong" and body.model == STRONG
                assert body.model_extra["tierwise"]["source"] == "fixed_arm"
                assert body.model_extra["tierwise"]["router_tier"] == "weak"
            else:
                assert raw.headers["x-tierwise-tier"] == "weak"
        assert arms[user] == expected.assign(user).arm.name
    counts = Counter(arms.values())
    assert counts["router"] > counts["always_strong"] > 0
    rows = traffic(gw)
    assert len(rows) == 72
    for row in rows.values():
        want = (0.75, "router") if row["arm"] == "router" else (0.25, "fixed_arm")
        assert (row["propensity"], row["source"]) == want
        assert row["router_tier"] == "weak" and len(row["features"]) > 0  # counterfactual kept


def test_requests_without_an_id_are_split_at_random(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle, ab=AB)
    seen = Counter(ask(gw)[0].headers["x-tierwise-arm"] for _ in range(40))
    assert set(seen) == {"router", "always_strong"}
    for row in traffic(gw).values():
        assert row["propensity"] == (0.75 if row["arm"] == "router" else 0.25)


def test_no_experiment_means_router_with_propensity_one(
    make_gateway: Any, fast_bundle: Path
) -> None:
    gw = make_gateway(fast_bundle)
    raw, _ = ask(gw, user="someone")
    assert raw.headers["x-tierwise-arm"] == "router"
    assert [r["propensity"] for r in traffic(gw).values()] == [1.0]


def test_a_fixed_arms_saving_is_not_routings(make_gateway: Any, fast_bundle: Path) -> None:
    # quality 1.0: the router arm answers on the top tier (saves nothing); the always_weak arm
    # saves by never asking the router's choice, which is the arm's saving, not routing's
    ab = {"salt": SALT, "arms": [{"name": "router", "weight": 0.5},
                                 {"name": "always_weak", "tier": "weak", "weight": 0.5}]}
    gw = make_gateway(fast_bundle, ab=ab)
    for i in range(16):
        raw = gw.client().chat.completions.with_raw_response.create(
            model="tierwise-auto", messages=[{"role": "user", "content": EASY}], user=f"u{i}",
            extra_body={"tierwise": {"quality": 1.0}})
        info = raw.parse().model_extra["tierwise"]
        if raw.headers["x-tierwise-arm"] == "always_weak":
            assert info["savings_usd"] > 0 and info["routing_savings_usd"] == 0.0
    with gw.http(ADMIN_KEY) as http:
        report = http.get("/v1/admin/savings").json()
    weak = report["by_arm"]["always_weak"]
    assert weak["savings_usd"] > 0
    assert weak["levers"]["ab_fixed_arm"] == pytest.approx(weak["savings_usd"])
    assert report["total"]["levers"]["routing"] == pytest.approx(0.0, abs=1e-12)
    assert report["lever_share_pct"]["ab_fixed_arm"] == pytest.approx(100.0, abs=0.05)
    with gw.http() as http:
        exposed = http.get("/metrics").text
    gauges = {line.split('"')[1]: float(line.split()[-1]) for line in exposed.splitlines()
              if line.startswith("tierwise_gateway_lever_savings_usd{")}
    assert gauges["routing"] == 0.0
    assert gauges["ab_fixed_arm"] == pytest.approx(weak["savings_usd"])


@pytest.mark.parametrize("ab", [
    {"arms": [{"name": "router", "weight": 1}, {"name": "x", "tier": "mid", "weight": 1}]},
    {"arms": [{"name": "fixed", "weight": 1}]},
    {"arms": [{"name": "router", "weight": 0}]},
    {"arms": []},
])
def test_bad_splits_are_refused(ab: dict[str, Any]) -> None:
    from gateway_support import config_doc

    from router_model.errors import InvalidData
    from service.gateway.config import parse_gateway_config

    class _Ups:
        weak_url = strong_url = "http://127.0.0.1:1/v1"

    with pytest.raises(InvalidData, match="ab"):
        parse_gateway_config(config_doc(_Ups(), Path("/tmp"), ab=ab))  # type: ignore[arg-type]
