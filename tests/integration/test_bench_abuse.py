"""``bench/bench_abuse.py --quick`` runs end to end and prints its three rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_abuse_quick() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_abuse.py"), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 4, done.stdout  # the header and one row per scenario
    assert "100/100 closed by the server" in rows[1]
    assert "refused 413" in rows[2] and "429 in" in rows[3]
