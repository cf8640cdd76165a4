"""``bench/bench_protocol.py --quick`` runs end to end on a seeded slice of the real data, so the
selection protocol cannot rot: every task, the baselines, the mean, the worst task, the rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TASKS = {"mmlu_unseen", "mmlu->gsm8k", "gsm8k->mmlu", "mmlu_pro", "code"}


@pytest.mark.slow
def test_quick_protocol_prints_every_task_and_baseline(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])}
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_protocol.py"), "--quick",
         "--labeled-dir", str(tmp_path / "labeled"), "--json", str(tmp_path / "t.json"),
         "--markdown", str(tmp_path / "t.md")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    table = json.loads((tmp_path / "t.json").read_text())
    for row in ("random", "length", "tfidf_lr", "emb_lr"):
        assert row in table and row in out
        assert TASKS <= set(table[row])
    assert "mean" in out and "worst" in out and "chosen by the rule:" in out
    assert all(m["apgr"] == pytest.approx(0.5) for m in table["random"].values()
               if m["apgr"] is not None)
    assert "| emb_lr |" in (tmp_path / "t.md").read_text()
