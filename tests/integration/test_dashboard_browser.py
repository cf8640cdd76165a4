"""The dashboard in a real browser: headless Chromium (DevTools protocol) after real traffic.

Skips where Debian's ``chromium`` is not installed (``.ci/run`` installs it). With
TIERWISE_DASHBOARD_SCREENSHOT set, the screenshot is also copied there (how docs/dashboard.png
is made).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from cdp_browser import Browser, chromium_binary
from gateway_support import (  # noqa: F401  (fixtures)
    ADMIN_KEY,
    EASY,
    HARD,
    make_gateway_fixture,
    upstreams_fixture,
)

from service.gateway.dashboard_page import usd

PROMPTS = (HARD, EASY, EASY, "Write a haiku about tea.", "Summarise the causes of WW1 in depth.")


@pytest.mark.slow
def test_dashboard_in_headless_chromium(make_gateway: Any, fast_bundle: Path,
                                        tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    gw = make_gateway(fast_bundle)
    client = gw.client()
    for text in PROMPTS:
        client.chat.completions.create(
            model="tierwise-auto", messages=[{"role": "user", "content": text}])
    with gw.http(ADMIN_KEY) as admin:
        savings = admin.get("/v1/admin/savings").json()
    browser = Browser(binary, tmp_path / "profile")
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable")
        browser.call("Network.setExtraHTTPHeaders",
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        browser.call("Emulation.setDeviceMetricsOverride", width=900, height=1300,
                     deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", url=gw.url + "/dashboard?window=24h")
        browser.wait_for("Page.loadEventFired")
        text = browser.call("Runtime.evaluate", expression="document.body.innerText",
                            returnByValue=True)["result"]["value"]
        charts = browser.call("Runtime.evaluate", returnByValue=True,
                              expression="document.querySelectorAll('svg polyline, svg rect')"
                                         ".length")["result"]["value"]
        shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        assert browser.errors() == []
    finally:
        browser.close()
    total = savings["total"]
    for figure in (total["cost_usd"], total["top_tier_cost_usd"], total["savings_usd"]):
        assert usd(figure) in text
    assert f"{total['requests']:,}" in text and "tier mix" in text and charts >= 3
    assert "A/B arms" in text and "not enough data" in text  # one arm, no labels: no verdict
    png = tmp_path / "dashboard.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("TIERWISE_DASHBOARD_SCREENSHOT")
    if target:
        shutil.copyfile(png, target)
