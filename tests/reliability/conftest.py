"""Reliability tests: fixtures shared with the gateway tests, and the RELIABILITY.md recorder.

A test marked ``@pytest.mark.reliability(scenario=..., action=..., expected=...)`` is one row of
RELIABILITY.md. It may state what it measured with the ``observed`` fixture
(``observed("answered 50/50, fail-open tier=weak")``); with ``--reliability-json PATH`` every
row (marker fields, outcome, measured detail, duration) is written to PATH at the end of the run,
and ``bench/reliability_report.py`` turns that file into the table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

# the gateway tests' fixtures and fakes (real servers on loopback) are reused, not copied
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from gateway_support import (  # noqa: E402, F401  (fixtures)
    child_env_fixture,
    make_gateway_fixture,
    postgres_url_fixture,
    upstreams_fixture,
)
from reliability_servers import ROUTER_ADMIN_KEY, ServerProcess, start_router  # noqa: E402

ROWS = pytest.StashKey[list[dict[str, Any]]]()
OBSERVED = "reliability_observed"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-json", default=None,
                     help="write the outcomes of reliability-marked tests to this JSON file")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[ROWS] = []


@pytest.fixture()
def observed(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``observed(text)``: what the test measured, shown in RELIABILITY.md (appended in order)."""

    def note(text: str) -> None:
        request.node.user_properties.append((OBSERVED, text))

    return note


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return
    # one row per test: its call, or the set-up phase when that failed or skipped
    if report.when == "call" or (report.when == "setup" and not report.passed):
        notes = [str(v) for k, v in item.user_properties if k == OBSERVED]
        detail = "; ".join(notes)
        if report.failed:
            detail = (detail + "; " if detail else "") + _failure_line(report)
        elif report.skipped and isinstance(report.longrepr, tuple):
            detail = str(report.longrepr[2]).removeprefix("Skipped: ")
        item.config.stash[ROWS].append({
            "nodeid": item.nodeid, "outcome": report.outcome,
            "duration_s": round(report.duration, 2), "observed": detail, **marker.kwargs,
        })


def _failure_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", "") or report.longreprtext.strip().splitlines()[-1:])
    return message.splitlines()[0][:200] if message else "failed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-json")
    if path:
        rows = session.config.stash[ROWS]
        Path(path).write_text(json.dumps(rows, indent=1), encoding="utf-8")


@pytest.fixture(scope="session")
def router_process(
    fast_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Generator[ServerProcess, None, None]:
    """One ``tierwise serve`` subprocess (fast bundle, admin key set, JSON logs) for the session."""
    import os

    env = {**os.environ, "TIERWISE_SERVICE__ADMIN_KEY": ROUTER_ADMIN_KEY,
           "TIERWISE_LOG_FORMAT": "json",
           "TIERWISE_SERVICE__BUNDLE_ROOTS": str(tmp_path_factory.getbasetemp())}
    log = tmp_path_factory.mktemp("router_process") / "serve.log"
    server = start_router(fast_bundle, env, log)
    yield server
    server.stop()
