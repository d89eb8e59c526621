"""Small, dependency-free SVG line charts for the HTML report.

Every chart is an ``<svg class="chart">`` with its data drawn as ``<path class="mark">``
elements (the report's self-check counts them); each line carries a ``<title>`` so a
browser shows the series name on hover. Missing values (None/NaN) break a line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str = ""
    dashed: bool = False
    width: float = 1.6


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            step = m * mag
            break
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a == 0 or a >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    chart_id: str,
    width: int = 560,
    height: int = 280,
    y_min: float | None = 0.0,
    y_max: float | None = None,
    hline: tuple[float, str] | None = None,
) -> str:
    """An SVG line chart; ``hline=(y, label)`` draws a dashed reference line."""
    left, right, top, bottom = 62, 14, 30, 44
    pw, ph = width - left - right, height - top - bottom
    xs_all = [x for s in series for x in s.xs if _finite(x)]
    ys_all = [y for s in series for y in s.ys if _finite(y)]
    if hline is not None:
        ys_all.append(hline[0])
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    y0 = min(ys_all) if ys_all else 0.0
    y1 = max(ys_all) if ys_all else 1.0
    if y_min is not None:
        y0 = min(y0, y_min)
    if y_max is not None:
        y1 = max(y1, y_max)
    xt = nice_ticks(x0, x1)
    yt = nice_ticks(y0, y1)
    x0, x1 = xt[0], xt[-1]
    y0, y1 = yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw if x1 > x0 else left

    def py(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph if y1 > y0 else top + ph

    out = [
        f'<svg class="chart" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" class="title">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>',
    ]
    for t in yt:
        y = py(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in xt:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" class="grid"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 16}" class="tick" '
            f'text-anchor="middle">{_fmt(t)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" class="label" '
        f'text-anchor="middle">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" class="label" '
        f'text-anchor="middle">{escape(ylabel)}</text>'
    )
    if hline is not None:
        y = py(hline[0])
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="ref"/>'
            f'<text x="{left + pw - 4}" y="{y - 4:.1f}" class="tick" '
            f'text-anchor="end">{escape(hline[1])}</text>'
        )
    for k, s in enumerate(series):
        color = s.color or PALETTE[k % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for x, y in zip(s.xs, s.ys, strict=False):
            if _finite(x) and _finite(y):
                segments[-1].append(f"{px(x):.1f},{py(y):.1f}")  # type: ignore[arg-type]
            elif segments[-1]:
                segments.append([])
        d = " ".join("M" + " L".join(seg) for seg in segments if seg)
        if not d:
            continue
        if all(len(seg) <= 1 for seg in segments):  # single points: draw dots
            d = " ".join(f"M{p} h0.01" for seg in segments for p in seg)
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        out.append(
            f'<path class="mark" d="{d}" fill="none" stroke="{color}" '
            f'stroke-width="{s.width}" stroke-linejoin="round" stroke-linecap="round"{dash}>'
            f"<title>{escape(s.name)}</title></path>"
        )
    if len(series) > 1:
        lx, ly = left + 8, top + 8
        shown = series[:12]
        for k, s in enumerate(shown):
            color = s.color or PALETTE[k % len(PALETTE)]
            y = ly + k * 14
            out.append(
                f'<line x1="{lx}" x2="{lx + 16}" y1="{y}" y2="{y}" stroke="{color}" '
                f'stroke-width="2.5"/><text x="{lx + 20}" y="{y + 4}" class="legend">'
                f"{escape(s.name)}</text>"
            )
        if len(series) > len(shown):
            out.append(
                f'<text x="{lx}" y="{ly + len(shown) * 14 + 4}" class="legend">'
                f"+{len(series) - len(shown)} more</text>"
            )
    out.append("</svg>")
    return "".join(out)


def cdf_points(values: Sequence[float], points: int = 300) -> tuple[list[float], list[float]]:
    """(x, F(x)) of the empirical CDF of ``values``, at most ``points`` steps."""
    data = sorted(v for v in values if _finite(v))
    n = len(data)
    if n == 0:
        return [], []
    if n <= points:
        xs = data
        ys = [(i + 1) / n for i in range(n)]
        return [xs[0], *xs], [0.0, *ys]
    xs, ys = [data[0]], [0.0]
    for j in range(1, points + 1):
        idx = min(n - 1, math.ceil(j / points * n) - 1)
        xs.append(data[idx])
        ys.append((idx + 1) / n)
    return xs, ys
