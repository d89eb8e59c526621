"""Error tables for measured vs simulated runs (text and Markdown), and a scatter plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "error_rows",
    "format_table",
    "markdown_table",
    "medians",
    "medians_by_tp",
    "scatter_svg",
]

METRICS = ("ttft", "e2e", "tpot")


def error_rows(
    runs: Sequence[Any], results: Sequence[Any], *, label: str = ""
) -> list[dict[str, Any]]:
    """One row per (run, stage): measured and simulated means and absolute % errors.

    ``results[i]`` is the list of stage results for ``runs[i]``, or an exception (then
    the row has no simulated values). ``tpot_meas`` is the reported TPOT; ``tpot*`` is
    (E2E - TTFT) / (output_len - 1) from the measured means (see docs/calibration.md).
    """
    from inference_sim.calibrate.fit import stage_errors

    rows = []
    for run, res in zip(runs, results, strict=True):
        if isinstance(res, Exception) or res is None:
            for st in run.stages:
                rows.append(
                    {
                        "run": run.name,
                        "model": run.model,
                        "stage": st.index,
                        "label": label,
                        "error": str(res) if res is not None else "n/a",
                    }
                )
            continue
        rates = {st.index: st.rate for st in run.stages}  # indexes need not be positions
        for e in stage_errors(run, res):
            row: dict[str, Any] = {
                "run": run.name,
                "model": run.model,
                "tp": run.tp,
                "stage": int(e["stage"]),
                "rate": rates.get(int(e["stage"]), 0.0),
                "label": label,
            }
            for k, v in e.items():
                if k != "stage":
                    row[k] = v
            for m in METRICS:
                row[f"{m}_ape"] = abs(e[f"{m}_err"]) * 100.0
            row["tpot_true_ape"] = abs(e["tpot_true_err"]) * 100.0
            rows.append(row)
    return rows


def medians(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Median APE (%) per metric over the rows that have one."""
    out = {}
    for key in (*(f"{m}_ape" for m in METRICS), "tpot_true_ape"):
        vals = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
        out[key] = statistics.median(vals) if vals else math.nan
    return out


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text table: per run and stage, measured/simulated and APE for each metric."""
    head = (
        f"{'run':44s} {'st':>2s}  {'TTFT ms meas/sim':>18s} {'APE%':>6s}  "
        f"{'E2E ms meas/sim':>19s} {'APE%':>6s}  {'TPOT ms meas/sim':>16s} {'APE%':>6s} "
        f"{'TPOT*%':>6s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['run'][:44]:44s} {r['stage']:>2d}  {r['error']}")
            continue
        lines.append(
            f"{r['run'][:44]:44s} {r['stage']:>2d}  "
            f"{r['ttft_meas']:8.1f}/{r['ttft_sim']:<9.1f} {r['ttft_ape']:6.1f}  "
            f"{r['e2e_meas']:9.1f}/{r['e2e_sim']:<9.1f} {r['e2e_ape']:6.1f}  "
            f"{r['tpot_meas']:7.2f}/{r['tpot_sim']:<8.2f} {r['tpot_ape']:6.1f} "
            f"{r['tpot_true_ape']:6.1f}"
        )
    med = medians(rows)
    lines.append("-" * len(head))
    lines.append(
        f"median APE: TTFT {_fmt(med['ttft_ape'])}%  E2E {_fmt(med['e2e_ape'])}%  "
        f"TPOT {_fmt(med['tpot_ape'])}%  (TPOT* {_fmt(med['tpot_true_ape'])}%)"
    )
    return "\n".join(lines)


def markdown_table(
    columns: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *, short_names: bool = True
) -> str:
    """Side-by-side APE table (Markdown): one row per (run, stage), one column group per model.

    ``columns`` is [(title, rows), ...] with rows from :func:`error_rows` in the same order.
    """
    first = columns[0][1]
    head = (
        "| run | TP | stage | rate | "
        + " | ".join(f"{t} TTFT | {t} E2E | {t} TPOT" for t, _ in columns)
        + " |"
    )
    sep = "|---|---:|---:|---:|" + "---:|---:|---:|" * len(columns)
    lines = [head, sep]
    index = [{(r["run"], r["stage"]): r for r in rows} for _, rows in columns]
    for r in first:
        key = (r["run"], r["stage"])
        name = r["run"]
        cells = []
        for idx in index:
            x = idx.get(key, {})
            for m in METRICS:
                v = x.get(f"{m}_ape")
                cells.append(_fmt(v) if v is not None else "n/a")
        lines.append(
            f"| {name} | {r.get('tp', '')} | {r['stage']} | {_fmt(r.get('rate', ''), 1)} | "
            + " | ".join(cells)
            + " |"
        )
    meds = [medians(rows) for _, rows in columns]
    cells = []
    for med in meds:
        for m in METRICS:
            cells.append(f"**{_fmt(med[f'{m}_ape'])}**")
    lines.append("| **median** | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def medians_by_tp(rows: Sequence[Mapping[str, Any]]) -> dict[int, tuple[int, dict[str, float]]]:
    """{TP: (number of rows, :func:`medians` of those rows)} for rows that carry a TP."""
    tps = sorted({int(r["tp"]) for r in rows if "tp" in r})
    out = {}
    for tp in tps:
        sel = [r for r in rows if r.get("tp") == tp]
        out[tp] = (len(sel), medians(sel))
    return out


def scatter_svg(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    title: str = "",
    width: int = 900,
    height: int = 320,
) -> str:
    """A small SVG: predicted vs measured, one log-log panel per series (name, unit, points)."""
    n = len(series)
    pw = width / max(1, n)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
        f'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    if title:
        out.append(
            f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>'
        )
    for i, (name, unit, pts) in enumerate(series):
        x0 = i * pw + 45
        y0 = 30
        w = pw - 60
        h = height - 50
        vals = [v for p in pts for v in p if v > 0]
        if not vals:
            continue
        lo = math.log10(min(vals)) - 0.05
        hi = math.log10(max(vals)) + 0.05

        def sx(v: float, x0: float = x0, w: float = w, lo: float = lo, hi: float = hi) -> float:
            return x0 + (math.log10(v) - lo) / (hi - lo) * w

        def sy(v: float, y0: float = y0, h: float = h, lo: float = lo, hi: float = hi) -> float:
            return y0 + h - (math.log10(v) - lo) / (hi - lo) * h

        out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
        # y = x and the +-10 % band
        a, b = 10**lo, 10**hi
        for f, dash in ((1.0, ""), (1.1, "4,3"), (1 / 1.1, "4,3")):
            x1, x2 = max(a, a / f), min(b, b / f)
            out.append(
                f'<line x1="{sx(x1):.1f}" y1="{sy(x1 * f):.1f}" x2="{sx(x2):.1f}" '
                f'y2="{sy(x2 * f):.1f}" stroke="#bbb" stroke-dasharray="{dash}"/>'
            )
        for meas, sim in pts:
            if meas > 0 and sim > 0:
                cx, cy = sx(meas), sy(min(max(sim, 10**lo), 10**hi))
                out.append(
                    f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#1f77b4" '
                    'fill-opacity="0.75"/>'
                )
        out.append(
            f'<text x="{x0 + w / 2}" y="{y0 + h + 16}" text-anchor="middle">'
            f"measured {name} ({unit})</text>"
        )
        out.append(
            f'<text x="{x0 - 32}" y="{y0 + h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 {x0 - 32} {y0 + h / 2})">predicted</text>'
        )
        for v in (10 ** math.ceil(lo), 10 ** math.floor(hi)):
            if 10**lo <= v <= 10**hi:
                out.append(
                    f'<text x="{sx(v):.1f}" y="{y0 + h + 28}" text-anchor="middle" '
                    f'fill="#666">{v:g}</text>'
                )
    out.append("</svg>")
    return "\n".join(out)
