"""The savings dashboard: ``GET /dashboard`` (HTML) and ``GET /v1/tierwise/dashboard.json``.

Both behind the admin key (absent where the admin endpoints are). The store's figures come from
``TrafficStore.dashboard`` (SQL aggregates); breakers, the budget knob and the time come from
this process. A store that cannot be read is a 503 while the rest of the gateway keeps answering.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from router_model.errors import ModelNotReady
from service.gateway.completions import Completions
from service.gateway.dashboard_page import dashboard_html, message_page
from service.gateway.errors import envelope
from service.store.aggregates import DEFAULT_WINDOW, WINDOWS, Aggregates

logger = logging.getLogger(__name__)

QUERY_PARAMETERS = frozenset({"window"})


class BadQuery(ValueError):
    """A query parameter the dashboard does not take, or a value it does not know."""


def window_of(request: Request) -> str:
    """The ``window`` query parameter (default ``DEFAULT_WINDOW``).

    Raises:
        BadQuery: for any other parameter, a repeated one, or an unknown window.
    """
    unknown = sorted(set(request.query_params) - QUERY_PARAMETERS)
    if unknown:
        raise BadQuery(f"unknown query parameters {unknown}; the dashboard takes 'window'")
    values = request.query_params.getlist("window")
    if len(values) > 1:
        raise BadQuery("'window' given more than once")
    window = values[0] if values else DEFAULT_WINDOW
    if window not in WINDOWS:
        raise BadQuery(f"unknown window {window[:40]!r}; windows are {list(WINDOWS)}")
    return window


def _completions(request: Request) -> Completions:
    completions: Completions | None = getattr(request.app.state, "completions", None)
    if completions is None:
        raise ModelNotReady("the gateway is starting")
    return completions


def live_state(completions: Completions) -> dict[str, Any]:
    """What this process knows now: breaker states and the budget knob in force."""
    budget = completions.budget
    return {
        "breakers": {t: b.state for t, b in completions.upstreams.breakers.items()},
        "budget": None if budget is None else {
            "top_share": budget.top_share, "knob": completions.planner.budget_knob(),
            "decisions": len(budget),
        },
    }


def page_data(found: Aggregates, completions: Completions) -> dict[str, Any]:
    """The dashboard's document: the store's aggregates plus this process's live state."""
    doc = found.model_dump(mode="json")
    doc.update(live_state(completions))
    doc["tiers"] = [t.name for t in completions.tiers]
    doc["generated_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return doc


async def _read(request: Request) -> tuple[Aggregates, Completions, str]:
    window = window_of(request)
    completions = _completions(request)
    return await completions.store.dashboard(window), completions, window


def dashboard_router(require_admin: Callable[[Request], None]) -> APIRouter:
    """The dashboard's routes, each guarded by ``require_admin``."""
    router = APIRouter(dependencies=[Depends(require_admin)])

    @router.get("/v1/tierwise/dashboard.json", response_model=None)
    async def dashboard_json(request: Request) -> Response:
        """The dashboard's figures as JSON (``window``: 24h, 7d, 30d or all)."""
        try:
            found, completions, _ = await _read(request)
        except BadQuery as exc:
            return JSONResponse(envelope(str(exc), 400, code="invalid_query"), 400)
        except ModelNotReady:
            raise
        except Exception as exc:  # the store's own error, whichever backend: a 503
            logger.error("dashboard: traffic store unreadable: %s", exc)
            return JSONResponse(envelope("the traffic store cannot be read", 503,
                                         code="store_unavailable"), 503)
        return JSONResponse(page_data(found, completions))

    @router.get("/dashboard", response_class=HTMLResponse)
    async def dashboard(request: Request) -> Response:
        """The savings dashboard page (``window``: 24h, 7d, 30d or all)."""
        try:
            found, completions, _ = await _read(request)
        except BadQuery as exc:
            return HTMLResponse(message_page("bad request", str(exc)), 400)
        except ModelNotReady:
            raise
        except Exception as exc:  # the store's own error, whichever backend: a 503 page
            logger.error("dashboard: traffic store unreadable: %s", exc)
            return HTMLResponse(message_page(
                "traffic store unavailable",
                "The traffic store cannot be read; the gateway keeps answering. "
                "This page tries again when reloaded."), 503, headers={"retry-after": "30"})
        data = page_data(found, completions)
        return HTMLResponse(dashboard_html(data, found.series, data["tiers"]))

    return router


class LiveCollector:
    """Prometheus gauges of this process's live state, for the alert rules: each upstream's
    breaker (``tierwise_gateway_breaker_open``, 1 open, 0.5 half-open, 0 closed) and, with a
    budget, the cap its knob is held under (``tierwise_gateway_budget_knob_cap``)."""

    def __init__(self, completions: Completions) -> None:
        self.completions = completions

    def collect(self) -> Iterator[Metric]:
        breakers = GaugeMetricFamily(
            "tierwise_gateway_breaker_open",
            "Upstream circuit breaker per tier: 1 open, 0.5 half-open (probing), 0 closed.",
            labels=["tier"])
        for tier, breaker in self.completions.upstreams.breakers.items():
            breakers.add_metric([tier], BREAKER_VALUE[breaker.state])
        yield breakers
        if self.completions.budget is not None:
            cap = self.completions.config.default_quality
            cap = self.completions.decisions.default_quality() if cap is None else cap
            yield GaugeMetricFamily(
                "tierwise_gateway_budget_knob_cap",
                "The knob the budget may not exceed (default_quality, else the router's).",
                value=math.nan if cap is None else cap)


BREAKER_VALUE = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
