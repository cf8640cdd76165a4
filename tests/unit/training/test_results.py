"""RESULTS.md generation: split rows show APGR and CPT(50%) with their bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path

from training.results import write_results


def _report(**extra: object) -> dict[str, object]:
    return {
        "n": 1770, "apgr": 0.6123, "cpt50": 0.3931, "cpt80": 0.623, "aiq": 0.771,
        "gap_closed": 0.136, "weak_quality": 0.7, "strong_quality": 0.8,
        "baselines": {"zero_router": {"aiq": 0.758}, "oracle": {"aiq": 0.854},
                      "random": {"apgr": 0.5}},
        **extra,
    }


def _write(tmp_path: Path, rep: dict[str, object]) -> str:
    bundle = tmp_path / "models" / "b"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"tiers": [], "metrics": {}}))
    reports = tmp_path / "reports" / "b"
    reports.mkdir(parents=True)
    (reports / "report_unseen.json").write_text(json.dumps(rep))
    out = write_results(tmp_path / "reports", tmp_path / "models", tmp_path / "RESULTS.md")
    return out.read_text()


def test_split_row_shows_the_intervals(tmp_path: Path) -> None:
    ci = {"apgr": [0.5612, 0.6649], "cpt50": [0.31, 0.47], "cpt80": [0.5, 0.7], "aiq": [0.7, 0.8]}
    text = _write(tmp_path, _report(ci95=ci))
    assert "| unseen | 1770 | 0.612 [0.56, 0.66] | 0.393 [0.31, 0.47] | 0.623 | 0.771 |" in text
    assert "bootstrap 95% confidence interval" in text


def test_report_without_intervals_keeps_plain_figures(tmp_path: Path) -> None:
    text = _write(tmp_path, _report())
    assert "| unseen | 1770 | 0.612 | 0.393 | 0.623 | 0.771 |" in text
