"""A serving install (``pip install tierwise``, no ``[train]`` extra) serves and says how to train.

The training packages are hidden from a fresh interpreter by an import hook, as if they were not
installed: the router and gateway import, and a training command exits 2 with the install line.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from cli.main import TRAIN_EXTRA_HINT, TRAINING_PACKAGES

REPO = Path(__file__).resolve().parents[3]

_SCRIPT = textwrap.dedent("""
    import importlib.abc, sys
    HIDDEN = {hidden!r}

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    import service.router.main, service.gateway.main, service.gateway.app  # noqa: F401
    from cli.main import main
    for command in ("serve", "gateway", "knob"):
        try:
            main([command, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, (command, exc.code)
    assert main(["train", "--data", "x.jsonl"]) == 2
    assert main(["retrain", "--help"]) == 2
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    assert not leaked, leaked
""")


def test_serving_runs_without_the_training_packages() -> None:
    script = _SCRIPT.format(hidden=sorted(TRAINING_PACKAGES))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert TRAIN_EXTRA_HINT in done.stderr
    assert "tierwise train: needs the training packages" in done.stderr
