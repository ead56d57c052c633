"""The rehearsal's timeline as one inline SVG, drawn in Python (no chart library, no network):
a Gantt bar per rehearsal phase and per migration step, and below them, on the same time axis,
the live writer's latency (max and median per time bucket) with the latency threshold."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 1100
LABEL_W = 300
RIGHT = 20
ROW = 12
PHASE_ROW = 16
LAT_H = 170
TOP = 24

PHASE_COLORS = {"expand": "#6a8caf", "sync": "#8e7cc3", "backfill": "#e69138", "validate": "#6aa84f",
                "index": "#3d85c6", "analyze": "#999999"}
FAILED = "#cc0000"


@dataclass
class Bar:
    label: str
    start: float  # seconds since the origin
    end: float
    kind: str  # phase | step
    group: str = ""  # the step's phase (colour)
    status: str = "done"
    note: str = ""


def _nice_step(span: float, target: int = 10) -> float:
    raw = max(span / target, 1e-3)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.1f}"


def timeline_svg(bars: Sequence[Bar], latency: Sequence[dict[str, float]], *, threshold_ms: float,
                 duration: float) -> str:
    """The SVG text. `latency` rows: {"t": seconds since origin, "p50_ms", "max_ms", "n"}."""
    duration = max(duration, max((b.end for b in bars), default=0.0),
                   max((p["t"] for p in latency), default=0.0), 0.001)
    plot_w = WIDTH - LABEL_W - RIGHT
    phases = [b for b in bars if b.kind == "phase"]
    steps = [b for b in bars if b.kind == "step"]
    gantt_h = len(phases) * PHASE_ROW + 8 + len(steps) * ROW
    lat_top = TOP + gantt_h + 34
    height = lat_top + LAT_H + 40

    def x(t: float) -> float:
        return LABEL_W + plot_w * max(0.0, t) / duration

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {WIDTH} {height}" '
           f'width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="10" role="img" '
           f'aria-label="rehearsal timeline and writer latency">',
           '<style>.step-bar:hover,.phase-bar:hover{stroke:#000;stroke-width:1}</style>',
           f'<text x="{LABEL_W}" y="14" font-size="12" font-weight="bold">timeline (seconds since the rehearsal '
           f'started)</text>']
    # time grid, shared by both panels
    tick = _nice_step(duration)
    t = 0.0
    while t <= duration + 1e-9:
        gx = x(t)
        out.append(f'<line x1="{gx:.1f}" y1="{TOP}" x2="{gx:.1f}" y2="{lat_top + LAT_H}" stroke="#e6e6e6"/>')
        out.append(f'<text x="{gx:.1f}" y="{lat_top + LAT_H + 14}" text-anchor="middle">{_fmt(t)}</text>')
        t += tick
    # Gantt rows
    y = TOP
    for b in phases:
        out.append(_bar(b, x, y, PHASE_ROW - 3, "phase-bar", "#444444"))
        y += PHASE_ROW
    y += 8
    for b in steps:
        out.append(_bar(b, x, y, ROW - 3, "step-bar", PHASE_COLORS.get(b.group, "#777777")))
        y += ROW
    # latency panel
    out.append(f'<text x="{LABEL_W}" y="{lat_top - 8}" font-size="12" font-weight="bold">live writer latency (ms): '
               f'max and median per time bucket; dashed: {_fmt(threshold_ms)} ms threshold</text>')
    out.append(f'<rect x="{LABEL_W}" y="{lat_top}" width="{plot_w}" height="{LAT_H}" fill="none" stroke="#bbbbbb"/>')
    peak = max([threshold_ms * 1.1, *[p["max_ms"] * 1.05 for p in latency]])
    y_tick = _nice_step(peak, 5)
    top_ms = math.ceil(peak / y_tick) * y_tick

    def ly(ms: float) -> float:
        return lat_top + LAT_H - LAT_H * min(ms, top_ms) / top_ms

    v = 0.0
    while v <= top_ms + 1e-9:
        out.append(f'<text x="{LABEL_W - 4}" y="{ly(v) + 3:.1f}" text-anchor="end">{_fmt(v)}</text>')
        v += y_tick
    out.append(f'<line class="latency-threshold" x1="{LABEL_W}" x2="{LABEL_W + plot_w}" y1="{ly(threshold_ms):.1f}" '
               f'y2="{ly(threshold_ms):.1f}" stroke="{FAILED}" stroke-dasharray="5,4"/>')
    if latency:
        for key, cls, color in (("max_ms", "latency-max", "#e06666"), ("p50_ms", "latency-p50", "#3d85c6")):
            pts = " ".join(f"{x(p['t']):.1f},{ly(p[key]):.1f}" for p in latency)
            out.append(f'<polyline class="latency-series {cls}" fill="none" stroke="{color}" stroke-width="1.2" '
                       f'points="{pts}"/>')
        out.append(f'<text x="{LABEL_W + plot_w - 4}" y="{lat_top + 12}" text-anchor="end">'
                   f'<tspan fill="#e06666">— max</tspan>  <tspan fill="#3d85c6">— median</tspan></text>')
    else:
        out.append(f'<text x="{LABEL_W + 8}" y="{lat_top + 20}">no writes recorded</text>')
    out.append("</svg>")
    return "\n".join(out)


def _bar(b: Bar, x: Callable[[float], float], y: float, h: float, cls: str, color: str) -> str:
    x0 = x(b.start)
    w = max(1.0, x(b.end) - x0)
    fill = FAILED if b.status == "failed" else color
    tip = f"{b.label}: {b.end - b.start:.3f} s ({b.status})" + (f" - {b.note}" if b.note else "")
    label = b.label if len(b.label) <= 46 else b.label[:45] + "…"
    weight = ' font-weight="bold"' if b.kind == "phase" else ""
    return (f'<text x="{LABEL_W - 6}" y="{y + h - 1:.1f}" text-anchor="end"{weight}>{escape(label)}</text>'
            f'<rect class="{cls}" data-name="{escape(b.label)}" data-status="{escape(b.status)}" x="{x0:.1f}" '
            f'y="{y:.1f}" width="{w:.1f}" height="{h}" fill="{fill}"><title>{escape(tip)}</title></rect>')
