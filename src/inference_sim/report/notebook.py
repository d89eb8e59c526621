"""How :class:`~inference_sim.results.Results` shows itself in Jupyter, and its comparisons.

``res._repr_html_()`` (what Jupyter displays) is a small block: the line of ``repr``
(deployment, workload), the headline metrics as a table, and the TTFT and E2E CDFs as
inline SVG (no JavaScript, no network, styles scoped to the block). ``Results`` sits
below the report layer, so this module registers the view (and ``Results.compare``) in
:data:`inference_sim.results.VIEWS`; the package imports it.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from inference_sim.report.compare import compare
from inference_sim.report.svg import Series, cdf_points, line_chart
from inference_sim.results import VIEWS, Results

#: Chart styles, scoped to the block so a notebook's own CSS is left alone.
_CSS = (
    ".isim-results{font-family:system-ui,sans-serif;font-size:12px}"
    ".isim-results table{border-collapse:collapse;margin:4px 0}"
    ".isim-results td,.isim-results th{border:1px solid #ddd;padding:2px 8px;text-align:right}"
    ".isim-results td.l,.isim-results th.l{text-align:left}"
    ".isim-results .row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}"
    ".isim-results svg .title{font-size:13px;font-weight:600;fill:#222}"
    ".isim-results svg .tick{font-size:10px;fill:#555}"
    ".isim-results svg .label{font-size:11px;fill:#333}"
    ".isim-results svg .legend{font-size:10px;fill:#333}"
    ".isim-results svg .plot{fill:#fcfcfc;stroke:#ccc}"
    ".isim-results svg .grid{stroke:#eee}"
)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 100:
            return f"{v:,.1f}"
        return f"{v:.3g}"
    return str(v)


def results_html(res: Results) -> str:
    from inference_sim.report.html import HEADLINE

    s = res.summary
    rows = "".join(
        f'<tr><td class="l">{escape(label)}</td><td>{escape(_fmt(s[key]))}</td></tr>'
        for key, label in HEADLINE
        if key in s
    )
    table = f"<table><tbody>{rows}</tbody></table>"
    charts = []
    recs = res.records
    if recs:
        for key, name, unit in (
            ("ttft_ms", "TTFT", "time to first token (ms)"),
            ("e2e_ms", "E2E", "end-to-end latency (ms)"),
        ):
            values = [float(r[key]) for r in recs if float(r.get(key) or 0) > 0]
            xs, ys = cdf_points(values)
            charts.append(
                line_chart(
                    [Series(name, xs, ys, color="#1f77b4", width=2.0)],
                    title=f"{name} CDF",
                    xlabel=unit,
                    ylabel="fraction of requests",
                    chart_id=f"isim-cdf-{key}",
                    width=380,
                    height=230,
                    y_max=1.0,
                )
            )
    flag = " <b>(interrupted)</b>" if s.get("interrupted") else ""
    return (
        f'<div class="isim-results"><style>{_CSS}</style>'
        f"<div><b>inference-sim results</b>{flag}: {escape(res.describe())}</div>"
        f'<div class="row">{table}{"".join(charts)}</div></div>'
    )


VIEWS["html"] = results_html
VIEWS["compare"] = compare
