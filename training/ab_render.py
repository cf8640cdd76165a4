"""The A/B report's page and plot: ``report.md`` and ``ab_arms.png`` of ``tierwise ab-report``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def arms_figure(report: dict[str, Any]) -> Figure:
    """Cost per request and quality per arm: quality bars with their bootstrap 95% CI, and no
    bar but "not enough data" for an arm below ``--min-labeled``; the verdict as the full title."""
    from matplotlib.figure import Figure

    arms = report["arms"]
    names = list(arms)
    title = textwrap.fill(report["verdict"], 120)
    lines = title.count("\n") + 1
    fig = Figure(figsize=(9, 3.2 + 0.16 * lines))
    ax_c, ax_q = fig.subplots(1, 2)
    ax_c.bar(names, [arms[a]["cost_per_request_usd"] or 0.0 for a in names], color="tab:blue")
    ax_c.set_ylabel("USD per request")
    known = [a for a in names if arms[a]["quality"] is not None]
    means = [arms[a]["quality"] for a in known]
    err = [[m - arms[a]["quality_ci"][0] for a, m in zip(known, means, strict=True)],
           [arms[a]["quality_ci"][1] - m for a, m in zip(known, means, strict=True)]]
    ax_q.bar(known, means, yerr=err, capsize=4, color="tab:green")
    for a in names:
        if arms[a]["quality"] is None:
            ax_q.bar([a], [0.0])  # keeps the arm's slot on the axis, draws nothing
            ax_q.text(a, 0.05, "not enough\ndata", ha="center", fontsize=7)
    ax_q.set_ylabel("mean feedback score (95% CI)")
    ax_q.set_ylim(0, 1)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    return fig


def plot_arms(report: dict[str, Any], path: Path) -> Path:
    """``arms_figure`` written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    path.parent.mkdir(parents=True, exist_ok=True)
    arms_figure(report).savefig(path, dpi=110)
    return path


def markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page."""
    lines = ["# A/B report", "", f"**Verdict:** {report['verdict']}", "",
             "| arm | requests | labeled | USD/request | quality | p50 latency ms | tier mix "
             "| model versions |", "|---|---|---|---|---|---|---|---|"]
    for arm, a in report["arms"].items():
        mix = ", ".join(f"{t} {v:.0%}" for t, v in a["tier_mix"].items())
        lines.append(f"| {arm} | {a['requests']} | {a['labeled']} | "
                     f"{_num(a['cost_per_request_usd'], '.6f')} | {_quality(a)} | "
                     f"{_num(a['latency_ms_p50'], '.1f')} | {mix} | "
                     f"{', '.join(f'{v} ({n})' for v, n in a['model_versions'].items())} |")
    if report.get("passthrough"):
        pt = report["passthrough"]
        lines += ["", f"Pass-through (client-chosen model, not randomised, not compared): "
                      f"{pt['requests']} requests, USD/request "
                      f"{_num(pt['cost_per_request_usd'], '.6f')}."]
    if report.get("ledger"):
        ledger = report["ledger"]
        quality = f"; quality {ledger['quality']}" if "quality" in ledger else ""
        lines += ["", f"## Savings ledger (USD {ledger['savings_usd']:.6f} saved against the "
                      f"top tier{quality})", "", "| part | USD saved | share |", "|---|---|---|"]
        for lever, part in report["ledger"]["levers"].items():
            lines.append(f"| {lever} | {part['usd']:.6f} | {part['share_pct']:.1f}% |")
    if report.get("off_policy"):
        lines += ["", "## Off-policy estimates (IPS / DR)", "",
                  "```json", json.dumps(report["off_policy"], indent=1), "```"]
    return "\n".join(lines) + "\n"


def _quality(arm: dict[str, Any]) -> str:
    if arm["quality"] is None:
        return str(arm["quality_note"] or "n/a")
    lo, hi = arm["quality_ci"]
    return f"{arm['quality']:.3f} [{lo:.3f}, {hi:.3f}]"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)
