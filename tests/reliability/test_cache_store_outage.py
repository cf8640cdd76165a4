"""The shared response cache's PostgreSQL unreachable while the gateway serves, then back.

The gateway reaches the cache's database through the TCP relay of ``test_postgres_outage``
(every connection reset, new ones refused, later restored). Needs TIERWISE_TEST_POSTGRES_URL
(CI starts a server); skipped without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gateway_support import HARD, Gateway, cache_rows, wait_until
from test_postgres_outage import Relay, relay  # noqa: F401  (fixture)

from service.gateway.levers.cache.store_pg import PostgresCacheStore

BODY = {"model": "gpt-4-1106-preview", "messages": [{"role": "user", "content": HARD}]}


@pytest.mark.reliability(
    scenario="Shared response cache's database unreachable at run time (PostgreSQL)",
    action="gateway with cache.url through a TCP relay; an answer stored then served from the "
           "cache, then the relay is cut for 3 requests, then restored",
    expected="all answered; while down every lookup misses (answered upstream) and the failures "
             "are counted in tierwise_gateway_cache_errors_total; once back, the answer stored "
             "before the cut is a cache hit again")
def test_cache_store_outage(
    make_gateway: Any, fast_bundle: Path, relay: tuple[Relay, str],  # noqa: F811
    postgres_url: str,
    observed: Any,
) -> None:
    proxy, url = relay
    gw: Gateway = make_gateway(fast_bundle, cache={"enabled": True, "url": url,
                                                   "refresh_s": 0.05})
    with gw.http() as http:
        first = http.post("/v1/chat/completions", json=BODY)
        wait_until(lambda: cache_rows(postgres_url) == 1, "the first answer committed")
        hit = http.post("/v1/chat/completions", json=BODY)
        proxy.cut()
        down = [http.post("/v1/chat/completions", json=BODY) for _ in range(3)]
        errors = _errors(http.get("/metrics").text)
        proxy.restore()
        cache = gw.completions.cache
        assert cache is not None and isinstance(cache.backend, PostgresCacheStore)
        backend = cache.backend
        wait_until(lambda: backend.connected, "the cache reconnected")
        back = http.post("/v1/chat/completions", json=BODY)
    answered = [first, hit, *down, back]
    layers = [r.json()["tierwise"]["cache"] for r in answered]
    observed(f"{sum(r.status_code == 200 for r in answered)}/6 answered; cache results {layers}; "
             f"store failures counted while down {errors:.0f}")
    assert [r.status_code for r in answered] == [200] * 6
    assert layers == [None, "exact", None, None, None, "exact"]
    assert errors >= 3


def _errors(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("tierwise_gateway_cache_errors_total{"):
            total += float(line.split()[-1])
    return total
