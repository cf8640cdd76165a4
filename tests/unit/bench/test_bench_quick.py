"""Each bench script's ``--quick`` mode runs to the end, so a bench cannot rot unseen.

A bench is a script that prints figures; ``--quick`` runs it on tiny data in seconds (on a quiet
2-core machine). Run as a subprocess, as a user runs it. The slower ones (a training run, a data
conversion) carry the ``slow`` marker, which ``make test`` still runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

#: script -> (extra arguments, a line its output must hold); {labeled} is a converted-data folder
#: shared by the module's tests. bench_protocol.py's and bench_cache_precision.py's quick
#: modes have their own tests.
QUICK: dict[str, tuple[list[str], str]] = {
    "bench_cache_store.py": ([], "in-process (MemoryCacheStore): 200 entries"),
    "bench_budget.py": (["--labeled-dir", "{labeled}"], "llmrouter        300"),
    "bench_cross_task.py": (["--labeled-dir", "{labeled}"], "mmlu_pro: 100 rows"),
    "bench_training.py": (["--labeled-dir", "{labeled}"], "total warm:"),
    "bench_ceilings.py": (["--labeled-dir", "{labeled}"], "validation task ("),
    "bench_seeds.py": (["--labeled-dir", "{labeled}"], "over 1 training seeds"),
    "bench_router.py": ([], "tierwise router bench:"),
    "bench_load.py": ([], "result: no errors"),
    "bench_gateway.py": ([], "bench_gateway: 10 requests per path"),
    # runs one hostile-input scenario (exit 0 needs its results rendered); report to a temp file
    "reliability_report.py": ([], ""),
    # trains its champion under its own name (a shipped bundle's name is refused), replays 60
    # fixture rows through a real gateway, then ab-report and retrain as commands
    "bench_replay.py": ([], "registry: champion -> version 1"),
    # streams 60 LLMRouter prompts through a real gateway with shadow sampling at 1.0 and a fake
    # judge answering the recorded outcomes, retraining after 30 and 60 labels
    "bench_learning.py": (["--labeled-dir", "{labeled}"], "after 40 prompts (40 labeled)"),
    # the same fits without the gateway, over shuffles: 1 shuffle, 40 labels
    "bench_learning_seeds.py": (["--labeled-dir", "{labeled}"], "fit on auto, weight 10: shipped"),
}
#: Under 10 s each on a quiet 2-core machine: the rest starts servers, converts or trains.
FAST = {"bench_cache_store.py"}


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("labeled")


def run_quick(script: str, args: list[str], labeled: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "bench")])
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick",
         *(a.format(labeled=labeled) for a in args)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=[] if s in FAST else [pytest.mark.slow]) for s in sorted(QUICK)],
)
def test_quick_mode_runs(script: str, labeled: Path) -> None:
    args, expect = QUICK[script]
    assert expect in run_quick(script, args, labeled)


def test_every_bench_script_has_a_quick_mode() -> None:
    # helpers imported by the scripts are not benches; these have their own quick-mode tests
    own_tests = {"bench_protocol.py", "bench_abuse.py", "bench_cache_precision.py",
                 "bench_dashboard.py", "bench_replicas.py"}
    helpers = {"wire_client.py", "grpc_wire_client.py", "serve_process.py",
               "router_throughput.py", "protocol_candidates.py", "protocol_data.py"}
    scripts = {p.name for p in (REPO / "bench").glob("*.py")} - helpers
    assert scripts - own_tests == set(QUICK)
    for name in sorted(scripts):
        assert "--quick" in (REPO / "bench" / name).read_text("utf-8"), name
