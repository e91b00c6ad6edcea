"""Small SVG charts for reports: bars and lines, drawn as plain SVG so a report is one file.

Each chart is a fixed viewBox scaled to the page width; axes carry their unit, the largest
value sets a rounded scale, and every series is named in a legend. No JavaScript: the report
renders the same in a browser, in headless Chromium for the PDF, and in a mail client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

W, H = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40
PALETTE = {
    "scope1": "#e76f51",
    "scope2_market": "#264653",
    "scope2_location": "#8d99ae",
    "load": "#264653",
    "clean": "#2a9d8f",
    "share": "#2a9d8f",
    "budget": "#e9c46a",
    "actual": "#e76f51",
}


@dataclass(frozen=True)
class Series:
    """One named series of a chart."""

    name: str
    values: Sequence[float | None]
    color: str


def _nice_max(v: float) -> float:
    """A round number at or above `v` for the top of the scale."""
    if v <= 0:
        return 1.0
    exp = float(10.0 ** math.floor(math.log10(v)))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    if v >= 1000 or v == int(v):
        return f"{v:,.0f}"
    return f"{v:,.2f}".rstrip("0").rstrip(".")


def _frame(chart_id: str, title: str, unit: str, top: float, labels: Sequence[str]) -> list[str]:
    ph = H - TOP - BOTTOM
    out = [
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{LEFT}" y="16" class="ctitle">{escape(title)}</text>',
        f'<text x="{W - RIGHT}" y="16" class="cunit" text-anchor="end">{escape(unit)}</text>',
    ]
    for i in range(5):
        v = top * i / 4
        y = TOP + ph - ph * i / 4
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(v)}</text>'
        )
    n = len(labels)
    step = max(1, math.ceil(n / 12))
    pw = W - LEFT - RIGHT
    for i in range(0, n, step):
        x = LEFT + pw * (i + 0.5) / n
        out.append(
            f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" class="tick">'
            f"{escape(labels[i])}</text>"
        )
    return out


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], LEFT
    for s in series:
        out.append(f'<rect x="{x}" y="{H - 14}" width="10" height="10" fill="{s.color}"/>')
        out.append(f'<text x="{x + 14}" y="{H - 5}" class="legend">{escape(s.name)}</text>')
        x += 24 + 7 * len(s.name)
    return out


def bars(
    chart_id: str, title: str, unit: str, labels: Sequence[str], stacks: Sequence[Series]
) -> str:
    """Stacked bars, one per label."""
    totals = [sum(s.values[i] or 0.0 for s in stacks) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0.0))
    out = _frame(chart_id, title, unit, top, labels)
    n = max(1, len(labels))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    bw = pw / n * 0.7
    for i in range(len(labels)):
        base = 0.0
        for s in stacks:
            v = s.values[i] or 0.0
            if v <= 0:
                continue
            y0 = TOP + ph - ph * (base + v) / top
            h = ph * v / top
            x = LEFT + pw * (i + 0.15) / n
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{y0:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                f'fill="{s.color}"><title>{escape(labels[i])} {escape(s.name)}: {_fmt(v)} '
                f"{escape(unit)}</title></rect>"
            )
            base += v
    out += _legend(stacks)
    out.append("</svg>")
    return "\n".join(out)


def lines(
    chart_id: str,
    title: str,
    unit: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    top: float | None = None,
) -> str:
    """Lines over the labels; a None value breaks its line."""
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    top = top or _nice_max(peak)
    out = _frame(chart_id, title, unit, top, labels)
    n = max(1, len(labels))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    for s in series:
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
                continue
            x = LEFT + pw * (i + 0.5) / n
            y = TOP + ph - ph * min(v, top) / top
            runs[-1].append(f"{x:.1f},{y:.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle class="line" cx="{cx}" cy="{cy}" r="2.5" fill="{s.color}"/>')
            elif run:
                out.append(
                    f'<polyline class="line" fill="none" stroke="{s.color}" stroke-width="2" '
                    f'points="{" ".join(run)}"/>'
                )
    out += _legend(series)
    out.append("</svg>")
    return "\n".join(out)
