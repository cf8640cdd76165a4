"""Package-level rules: public API, settings ownership of the environment, CLI dispatch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import router_model
from cli.main import COMMANDS, main

REPO = Path(__file__).resolve().parents[3]


def test_all_is_sorted_and_exported() -> None:
    assert list(router_model.__all__) == sorted(router_model.__all__)
    for name in router_model.__all__:
        assert hasattr(router_model, name)


def test_environment_is_read_only_in_settings() -> None:
    pattern = re.compile(r"os\.environ|os\.getenv|getenv\(")
    offenders = []
    for pkg in ("router_model", "service", "training"):
        for path in (REPO / pkg).rglob("*.py"):
            if path.name == "settings.py" or "_pb2" in path.name:
                continue
            if pattern.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_cli_help_and_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main(["nope"]) == 2
    assert main([]) == 2


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out
