"""The house stays walkable: no module over 400 lines (issue 19), and every package says what it
owns in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARTS = ("router_model", "service", "training", "cli", "bench", "tests")
MAX_LINES = 400


def test_no_module_over_the_limit() -> None:
    long = {str(p.relative_to(REPO)): n for part in PARTS for p in (REPO / part).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (over {MAX_LINES} lines): {long}"


def test_every_package_says_what_it_owns() -> None:
    silent = [str(init.relative_to(REPO)) for part in PARTS[:4]
              for init in (REPO / part).rglob("__init__.py")
              if not ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))]
    assert silent == []
