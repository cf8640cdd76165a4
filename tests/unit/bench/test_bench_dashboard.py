"""``bench/bench_dashboard.py --quick`` runs end to end (SQLite; PostgreSQL too when
TIERWISE_TEST_POSTGRES_URL is set), so the dashboard's benchmark cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_quick_dashboard_bench_times_every_window(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, str(REPO / "bench" / "bench_dashboard.py"), "--quick",
            "--json", str(tmp_path / "t.json")]
    pg = os.environ.get("TIERWISE_TEST_POSTGRES_URL")
    if pg:
        argv += ["--postgres-url", pg]
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
                         check=True).stdout
    result = json.loads((tmp_path / "t.json").read_text())
    for backend in ("sqlite", "postgresql") if pg else ("sqlite",):
        found = result[backend]
        assert set(found["windows"]) == {"24h", "7d", "30d", "all"}
        # every answered record is in the rollup the page reads, as in the all-time savings
        assert found["windows"]["all"]["requests"] == found["all_time_savings_requests"] > 0
    assert "page data median" in out
