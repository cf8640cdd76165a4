"""Figures of a ``training.report.build_report`` report: cost-quality and PGR plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

_STYLE: dict[str, dict[str, Any]] = {
    "oracle": {"color": "tab:green", "linestyle": ":", "marker": "", "label": "oracle"},
    # wide and faint: with two tiers it coincides with the random line drawn over it
    "zero_router": {"color": "tab:gray", "linestyle": "-", "marker": "", "linewidth": 4,
                    "alpha": 0.4, "label": "zero router (best mix of fixed tiers)"},
    "random": {"color": "tab:orange", "linestyle": "-.", "marker": "",
               "label": "random (cheapest/top mix)"},
}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _frontier(curve: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points up to the first best quality: the oracle's tail to always-top adds nothing."""
    best = max(range(len(curve)), key=lambda i: (curve[i]["quality"], -i))
    return list(curve[: best + 1])


def _new_axes(title: str) -> tuple[Any, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.0), dpi=120, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def _router_label(report: dict[str, Any]) -> str:
    return (f"router  APGR {_fmt(report['apgr'])}  CPT50 {_fmt(report['cpt50'])}  "
            f"CPT80 {_fmt(report['cpt80'])}  AIQ {_fmt(report['aiq'])}")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    logger.info("wrote %s", path)
    return path


def plot_cost_quality(report: dict[str, Any], path: Path, title: str) -> Path:
    """Router curve, fixed tiers, zero-router hull, random line and oracle frontier; saves a PNG.

    x is the mean cost per request (USD), y the mean quality. The oracle is drawn up to its best
    point (its closing tail to always-top is dominated) and the oracle point is starred; a report
    with ``at_default_knob`` marks where requests without a policy land.

    Raises:
        KeyError: when ``report`` lacks a field of ``build_report``'s output.
    """
    fig, ax = _new_axes(title)
    base = report["baselines"]
    for name in ("oracle", "zero_router", "random"):
        curve = base[name]["curve"]
        if name == "oracle":
            curve = _frontier(curve)
        ax.plot([p["cost"] for p in curve], [p["quality"] for p in curve], **_STYLE[name])
    best = base["oracle"]
    ax.plot(best["cost"], best["quality"], marker="*", markersize=12, color="tab:green",
            linestyle="none", label=f"oracle point (quality {_fmt(best['quality'])})")
    router = report["curve"]
    ax.plot([p["cost"] for p in router], [p["quality"] for p in router], color="tab:blue",
            marker=".", linewidth=2, label=_router_label(report))
    at = report.get("at_default_knob")
    if at is not None:
        share = at[report["share_axis"]]
        what = "top-tier calls" if report["share_axis"] == "strong_share" else "cost share"
        ax.plot(at["cost"], at["quality"], marker="D", markersize=8, color="tab:red",
                linestyle="none", label=f"default knob {at['knob']:.3f}: {share:.0%} {what}")
    for name in report["tier_names"]:
        point = base[f"always_{name}"]
        ax.plot(point["cost"], point["quality"], marker="o", color="black", linestyle="none")
        ax.annotate(f"always {name}", (point["cost"], point["quality"]), fontsize=8,
                    xytext=(5, -12), textcoords="offset points")
    ax.set_xlabel("mean cost per request (USD)")
    ax.set_ylabel("mean quality")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_pgr(report: dict[str, Any], path: Path, title: str = "Performance gap recovered") -> Path:
    """PGR over the report's share axis (top-tier calls; cost share for 3+ tiers); saves a PNG.

    Raises:
        ValueError: when weak and strong quality are equal (PGR is undefined).
        KeyError: when ``report`` lacks a field of ``build_report``'s output.
    """
    weak, strong = report["weak_quality"], report["strong_quality"]
    if report["apgr"] is None or strong == weak:
        raise ValueError("PGR is undefined when strong and weak quality are equal")
    axis = report["share_axis"]
    fig, ax = _new_axes(title)
    base = report["baselines"]
    curves = [(base[n]["curve"], _STYLE[n]) for n in ("oracle", "zero_router", "random")]
    curves.append((report["curve"], {"color": "tab:blue", "marker": ".", "linewidth": 2,
                                     "label": _router_label(report)}))
    for curve, style in curves:
        pts = sorted(curve, key=lambda p: (p[axis], p["quality"]))
        ax.plot([p[axis] for p in pts], [(p["quality"] - weak) / (strong - weak) for p in pts],
                **style)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("share of calls to the top tier" if axis == "strong_share"
                  else "cost share (0 = always cheapest, 1 = always top)")
    ax.set_ylabel("PGR")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
