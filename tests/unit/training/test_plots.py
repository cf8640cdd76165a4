"""Report plots: written as readable PNGs from a real report, refused where PGR is undefined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.plots import plot_cost_quality, plot_pgr
from training.report import build_report

PNG = b"\x89PNG\r\n\x1a\n"


def _report(k: int) -> dict[str, object]:
    rng = np.random.default_rng(k)
    n = 60
    scores = (rng.random((n, k)) < np.linspace(0.4, 0.85, k)).astype(np.float64)
    costs = np.tile(np.geomspace(0.0005, 0.01, k), (n, 1))
    proba = rng.dirichlet(np.ones(k), size=n)
    return build_report(scores, costs, [f"tier{i}" for i in range(k)], proba, default_knob=0.5)


@pytest.mark.parametrize("k", [2, 3])
def test_plots_write_png(tmp_path: Path, k: int) -> None:
    rep = _report(k)
    out = plot_cost_quality(rep, tmp_path / "sub" / "cq.png", title=f"{k} tiers")
    assert out == tmp_path / "sub" / "cq.png"
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    pgr = plot_pgr(rep, tmp_path / "pgr.png")
    assert pgr.read_bytes()[:8] == PNG


def test_pgr_plot_refuses_without_gap(tmp_path: Path) -> None:
    s = np.array([[1.0, 1.0], [0.0, 0.0]])
    rep = build_report(s, np.array([[1.0, 2.0]] * 2), ["a", "b"], np.tile([0.5, 0.5], (2, 1)))
    plot_cost_quality(rep, tmp_path / "cq.png", title="no gap")
    with pytest.raises(ValueError):
        plot_pgr(rep, tmp_path / "pgr.png")
