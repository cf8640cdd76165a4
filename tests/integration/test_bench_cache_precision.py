"""``bench/bench_cache_precision.py --quick`` runs end to end (so the benchmark cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_cache_precision_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_cache_precision.py"), "--quick"],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for kind in ("near_duplicate", "reordered", "number", "negated", "repeat", "templated"):
        assert kind in done.stdout
    assert "0.95*" in done.stdout
    assert done.stdout.count("lookup at 1,000 entries") == 2
