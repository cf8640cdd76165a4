"""The dashboard's HTML: server-rendered, charts as inline SVG, no script, refreshes itself."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from service.store.aggregates import WINDOWS, Bucket

#: Seconds between the page's own reloads (``<meta http-equiv="refresh">``).
REFRESH_S = 30
#: Series colours (spend, baseline) and tier colours, cheapest tier first.
COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
WIDTH, HEIGHT, PAD = 720, 220, 40

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:64rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{border:1px solid #ccc;border-radius:6px;padding:.5rem .8rem;min-width:9rem}
.card b{display:block;font-size:1.2rem}
table{border-collapse:collapse}td,th{padding:.2rem .7rem;border-bottom:1px solid #ddd;
text-align:right}td:first-child,th:first-child{text-align:left}
.open{color:#b00;font-weight:bold}.half_open{color:#c60}.closed{color:#070}
svg text{font-size:11px;fill:#444}nav a{margin-right:.8rem}
"""


def usd(value: float) -> str:
    """Dollars as the page writes them (6 decimals: single requests cost fractions of a cent)."""
    return f"${value:,.6f}"


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def document(title: str, body: str, window: str | None = None) -> str:
    """A whole page around ``body``; the dashboard itself (``window`` set) reloads itself."""
    refresh = "" if window is None else (
        f'<meta http-equiv="refresh" content="{REFRESH_S}">')
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def message_page(title: str, text: str) -> str:
    """A page that only says ``text`` (errors: bad query, store down)."""
    return document(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>")


def _nav(window: str) -> str:
    links = [f"<b>{w}</b>" if w == window else f'<a href="?window={w}">{w}</a>'
             for w in WINDOWS]
    return f"<nav>window: {' '.join(links)}</nav>"


def _card(label: str, value: str, ident: str) -> str:
    return f'<div class="card" id="{ident}">{escape(label)}<b>{escape(value)}</b></div>'


def cards(data: dict[str, Any]) -> str:
    """The headline figures: spend, baseline, saving, latency, knob, model version."""
    total = data["savings"]["total"]
    lat, budget = data["latency"], data["budget"]
    knob = "default (no budget)" if budget is None else (
        "default (window filling)" if budget["knob"] is None else f"{budget['knob']:.4f}")
    return '<div class="cards">' + "".join([
        _card("requests", f"{total['requests']:,}", "requests"),
        _card("spend", usd(total["cost_usd"]), "spend"),
        _card("all-top-tier baseline", usd(total["top_tier_cost_usd"]), "baseline"),
        _card("saved", f"{usd(total['savings_usd'])} ({data['savings']['savings_pct']:.1f}%)",
              "saved"),
        _card("added latency p50 / p99",
              f"{_fmt(lat['p50_ms'], ' ms')} / {_fmt(lat['p99_ms'], ' ms')}", "latency"),
        _card("budget knob in force", knob, "knob"),
        _card("model version", data["model_version"] or "–", "model"),
    ]) + "</div>"


def parts_table(data: dict[str, Any]) -> str:
    """Savings by ledger part (routing, each lever), USD and share of the saving."""
    levers, share = data["savings"]["total"]["levers"], data["savings"]["lever_share_pct"]
    rows = "".join(
        f'<tr id="part-{escape(k)}"><td>{escape(k)}</td><td>{usd(v)}</td>'
        f"<td>{share.get(k, 0.0):.1f}%</td></tr>" for k, v in levers.items())
    return f"<table><tr><th>part</th><th>saved</th><th>share</th></tr>{rows}</table>"


def breakers_table(breakers: dict[str, str]) -> str:
    """Each upstream's circuit breaker state."""
    rows = "".join(f'<tr><td>{escape(t)}</td><td class="{escape(s)}">{escape(s)}</td></tr>'
                   for t, s in breakers.items())
    return f"<table><tr><th>tier</th><th>breaker</th></tr>{rows}</table>"


def _quality(arm: dict[str, Any]) -> str:
    if arm["quality"] is None:
        return escape(arm["quality_note"] or "–")
    lo, hi = arm["quality_ci"]
    return f"{arm['quality']:.3f} [{lo:.3f}, {hi:.3f}]"


def _against(cmp: dict[str, Any] | None) -> str:
    """The router arm minus this arm: cost per request, quality [95% CI], permutation p."""
    if cmp is None or cmp["quality_diff"] is None:
        return "<td>–</td><td>–</td>"
    q = cmp["quality_diff"]
    return (f"<td>{cmp['cost_diff_usd']:+.6f}</td>"
            f"<td>{q['diff']:+.3f} [{q['lo']:+.3f}, {q['hi']:+.3f}], p = {q['p_value']:.3g}</td>")


def arms_table(ab: dict[str, Any]) -> str:
    """The A/B arms: requests, cost per request, mean feedback with its 95% CI, and the router
    arm's differences from each other arm (``tierwise ab-report``'s figures), then its verdict."""
    rows = "".join(
        f'<tr id="arm-{escape(name)}"><td>{escape(name)}</td><td>{arm["requests"]:,}</td>'
        f"<td>{'–' if arm['cost_per_request_usd'] is None else usd(arm['cost_per_request_usd'])}"
        f"</td><td>{arm['labeled']:,}</td><td>{_quality(arm)}</td>"
        f"{_against(ab['comparisons'].get(name))}</tr>" for name, arm in ab["arms"].items())
    reference = escape(ab["reference"])
    return (f"<table><tr><th>arm</th><th>requests</th><th>cost / request</th><th>labeled</th>"
            f"<th>quality (mean feedback) [95% CI]</th><th>{reference} − arm: cost (USD)</th>"
            f"<th>{reference} − arm: quality [95% CI], p</th></tr>{rows}</table>"
            f'<p id="ab-verdict">{escape(ab["verdict"])}</p>')


def _x(i: int, n: int) -> float:
    return PAD + (WIDTH - 2 * PAD) * (i / max(n - 1, 1))


def _y(v: float, top: float) -> float:
    return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / top if top > 0 else 0.0)


def _axes(buckets: Sequence[Bucket], top: str) -> str:
    first, last = buckets[0].start, buckets[-1].start
    return (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        f'stroke="#888"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" '
        f'stroke="#888"/><text x="{PAD}" y="{HEIGHT - PAD + 16}">{escape(first)}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" text-anchor="end">{escape(last)}'
        f'</text><text x="{PAD - 4}" y="{PAD - 6}">{escape(top)}</text>'
    )


def spend_chart(buckets: Sequence[Bucket]) -> str:
    """Spend and the all-top-tier baseline per bucket, two lines."""
    top = max(max(b.top_tier_cost_usd, b.cost_usd) for b in buckets)
    lines = []
    for colour, label, values in (
        (COLOURS[0], "spend", [b.cost_usd for b in buckets]),
        (COLOURS[1], "all-top-tier baseline", [b.top_tier_cost_usd for b in buckets]),
    ):
        pts = " ".join(f"{_x(i, len(values)):.1f},{_y(v, top):.1f}"
                       for i, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{pts}"><title>{label}</title></polyline>')
        lines += [f'<circle cx="{_x(i, len(values)):.1f}" cy="{_y(v, top):.1f}" r="3" '
                  f'fill="{colour}"/>' for i, v in enumerate(values)]  # one bucket: a dot
    legend = (f'<text x="{WIDTH - PAD}" y="{PAD - 6}" text-anchor="end">'
              f'<tspan fill="{COLOURS[0]}">— spend</tspan> '
              f'<tspan fill="{COLOURS[1]}">— all-top-tier baseline</tspan></text>')
    return (f'<svg id="spend-chart" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="spend against the all-top-tier baseline">'
            f"{_axes(buckets, usd(top))}{''.join(lines)}{legend}</svg>")


def tier_chart(buckets: Sequence[Bucket], tiers: Sequence[str]) -> str:
    """Requests per bucket stacked by tier (cheapest at the bottom)."""
    top = max(b.requests for b in buckets)
    step = (WIDTH - 2 * PAD) / len(buckets)
    rects = []
    for i, b in enumerate(buckets):
        base = 0
        for k, tier in enumerate(tiers):
            n = b.tiers.get(tier, 0)
            if n:
                y0, y1 = _y(base, top), _y(base + n, top)
                rects.append(
                    f'<rect x="{PAD + i * step + 1:.1f}" y="{y1:.1f}" width="{step - 2:.1f}" '
                    f'height="{y0 - y1:.1f}" fill="{COLOURS[2 + k % 5]}"><title>'
                    f"{escape(b.start)} {escape(tier)}: {n}</title></rect>")
            base += n
    legend = " ".join(f'<tspan fill="{COLOURS[2 + k % 5]}">■ {escape(t)}</tspan>'
                      for k, t in enumerate(tiers))
    return (f'<svg id="tier-chart" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="tier mix">{_axes(buckets, f"{top:,} requests")}{"".join(rects)}'
            f'<text x="{WIDTH - PAD}" y="{PAD - 6}" text-anchor="end">{legend}</text></svg>')


def dashboard_html(data: dict[str, Any], buckets: Sequence[Bucket], tiers: Sequence[str]
                   ) -> str:
    """The dashboard page for ``data`` (``dashboard.page_data``'s document)."""
    window = data["window"]
    head = (f"<h1>tierwise savings</h1>{_nav(window)}<p>buckets of one {data['bucket']}, "
            f"generated {escape(data['generated_at'])} UTC, reloads every {REFRESH_S} s</p>")
    status = (f"<h2>upstreams</h2>{breakers_table(data['breakers'])}")
    if not buckets:
        body = f'{head}<p id="empty">no traffic yet</p>{cards(data)}{status}'
        return document("tierwise dashboard", body, window)
    body = (
        f"{head}{cards(data)}<h2>spend against the all-top-tier baseline</h2>"
        f"{spend_chart(buckets)}<h2>savings by part</h2>{parts_table(data)}"
        f"<h2>tier mix</h2>{tier_chart(buckets, tiers)}"
        f"<h2>A/B arms</h2>{arms_table(data['ab'])}{status}"
    )
    return document("tierwise dashboard", body, window)
