"""``tierwise retrain`` refuses out-of-range gate parameters as usage errors, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.retrain import main

BAD = [
    ("--adequate", "1.5"), ("--adequate", "-0.1"), ("--adequate", "nan"),
    ("--max-slowdown", "0"), ("--max-slowdown", "0.5"), ("--max-slowdown", "x"),
    ("--margin", "-1"), ("--margin", "1.5"),
    ("--holdout-fraction", "1"), ("--holdout-fraction", "-0.2"),
    ("--traffic-weight", "0"), ("--traffic-weight", "inf"), ("--fit-on", "soft"),
]


@pytest.mark.parametrize(("flag", "value"), BAD)
def test_out_of_range_is_a_usage_error(flag: str, value: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--db", f"sqlite:///{tmp_path / 't.db'}", "--name", "x", "--out",
            str(tmp_path / "out"), "--tracking-uri", uri, "--base-data", "x.jsonl", flag, value]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
    # refused before the registry or the output folder is touched
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()


def test_edges_are_accepted(tmp_path: Path) -> None:
    # in range, the run gets past argparse and fails later on the missing store (exit 2, no raise)
    argv = ["--db", f"sqlite:///{tmp_path / 't.db'}", "--name", "x", "--out",
            str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--base-data", "x.jsonl", "--adequate", "1", "--margin", "0", "--max-slowdown", "1",
            "--holdout-fraction", "0"]
    assert main(argv) == 2
