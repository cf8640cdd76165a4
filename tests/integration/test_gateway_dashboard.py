"""The dashboard on a real gateway with the fake upstreams: page, JSON, auth, bad query, store
down."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
from fake_upstream import start_server
from gateway_support import (  # noqa: F401  (fixtures)
    ADMIN_KEY,
    EASY,
    HARD,
    config_doc,
    make_gateway_fixture,
    upstreams_fixture,
)

from service.gateway.app import create_gateway_app
from service.gateway.assembly import GatewayOptions
from service.gateway.config import parse_gateway_config
from service.gateway.dashboard_page import usd


def send_traffic(gw: Any) -> None:
    client = gw.client()
    for text in (HARD, EASY, EASY):
        client.chat.completions.create(
            model="tierwise-auto", messages=[{"role": "user", "content": text}])


def test_dashboard_page_and_json(make_gateway: Any, fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    with gw.http(ADMIN_KEY) as admin:
        empty = admin.get("/dashboard")
        assert empty.status_code == 200 and "no traffic yet" in empty.text
        send_traffic(gw)
        savings = admin.get("/v1/admin/savings").json()
        page = admin.get("/dashboard", params={"window": "24h"})
        doc = admin.get("/v1/tierwise/dashboard.json").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'http-equiv="refresh"' in page.text and "<script" not in page.text
    for figure in (savings["total"]["cost_usd"], savings["total"]["top_tier_cost_usd"],
                   savings["total"]["savings_usd"], *savings["total"]["levers"].values()):
        assert usd(figure) in page.text
    assert '<svg id="spend-chart"' in page.text and '<svg id="tier-chart"' in page.text
    assert doc["savings"] == savings
    assert doc["breakers"] == {"weak": "closed", "strong": "closed"}
    assert doc["latency"]["samples"] == 3 and doc["latency"]["p99_ms"] > 0
    assert doc["model_version"] and doc["budget"] is None
    assert sum(b["requests"] for b in doc["series"]) == 3


def test_dashboard_refuses_bad_queries_and_other_keys(make_gateway: Any,
                                                      fast_bundle: Path) -> None:
    gw = make_gateway(fast_bundle)
    with gw.http(ADMIN_KEY) as admin, gw.http() as client:
        for path in ("/dashboard", "/v1/tierwise/dashboard.json"):
            assert admin.get(path, params={"windw": "7d"}).status_code == 400
            assert admin.get(path, params={"window": "1y"}).status_code == 400
            assert admin.get(path + "?window=7d&window=24h").status_code == 400
            assert client.get(path).status_code == 401
        assert "unknown query parameters" in admin.get("/dashboard?x=1").text


def test_dashboard_is_absent_without_an_admin_key(upstreams: Any, tmp_path: Path,
                                                  fast_bundle: Path) -> None:
    doc = config_doc(upstreams, tmp_path, router={"bundle": str(fast_bundle)})
    app = create_gateway_app(parse_gateway_config(doc), GatewayOptions(require_auth=False))
    st = start_server(app, lifespan="on")
    try:
        assert httpx.get(st.url + "/dashboard").status_code == 404
    finally:
        st.stop()


def test_store_down_is_a_503_page_and_the_gateway_keeps_answering(
    make_gateway: Any, fast_bundle: Path, tmp_path: Path
) -> None:
    gw = make_gateway(fast_bundle)
    send_traffic(gw)
    with sqlite3.connect(tmp_path / "traffic.db") as db:  # the table goes away under the gateway
        db.execute("ALTER TABLE traffic RENAME TO traffic_away")
    with gw.http(ADMIN_KEY) as admin:
        down = admin.get("/dashboard")
        assert down.status_code == 503 and "traffic store unavailable" in down.text
        assert admin.get("/v1/tierwise/dashboard.json").status_code == 503
        assert admin.get("/healthz").status_code == 200
        answer = gw.client().chat.completions.create(
            model="tierwise-auto", messages=[{"role": "user", "content": EASY}])
        assert answer.choices[0].message.content
        with sqlite3.connect(tmp_path / "traffic.db") as db:
            db.execute("ALTER TABLE traffic_away RENAME TO traffic")
        assert admin.get("/dashboard").status_code == 200


def test_dashboard_shows_the_ab_arms(make_gateway: Any, fast_bundle: Path) -> None:
    arms = [{"name": "router", "weight": 0.5},
            {"name": "always_strong", "tier": "strong", "weight": 0.5}]
    gw = make_gateway(fast_bundle, ab={"arms": arms})
    client = gw.client()
    with gw.http() as http:
        for i in range(12):
            answer = client.chat.completions.create(
                model="tierwise-auto", user=f"user-{i}",
                messages=[{"role": "user", "content": EASY}])
            label = {"decision_id": answer.model_dump()["tierwise"]["decision_id"],
                     "score": 1.0}
            assert http.post("/v1/feedback", json=label).status_code == 200
    with gw.http(ADMIN_KEY) as admin:
        ab = admin.get("/v1/tierwise/dashboard.json").json()["ab"]
        page = admin.get("/dashboard").text
    assert set(ab["arms"]) == {"router", "always_strong"}
    assert sum(a["requests"] for a in ab["arms"].values()) == 12
    assert sum(a["labeled"] for a in ab["arms"].values()) == 12
    assert ab["arms"]["always_strong"]["cost_per_request_usd"] > 0
    assert ab["verdict"].startswith("not enough data")  # 12 labels: below the 30 needed
    assert "<h2>A/B arms</h2>" in page
    assert 'id="arm-router"' in page and 'id="arm-always_strong"' in page
    assert "not enough data" in page
