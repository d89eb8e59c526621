"""Several runs side by side: labels, the metrics table, and the overlay report page.

Used by ``inference_sim.compare([...])`` / ``Results.compare`` (a table) and by
``blis report a.json b.json -o cmp.html`` (one page with every run's CDFs and time
series overlaid, one colour per run, and the summary table side by side).

Runs are labelled by what tells them apart: the configuration options whose values
differ between them (``rate=10``, ``rate=20``), else their file names, else ``run 1``,
``run 2``, ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from inference_sim.metrics.timeseries import table_rows
from inference_sim.report.svg import PALETTE, Series, cdf_points, line_chart
from inference_sim.results import SUMMARY_NUMBER_KEYS, Results, workload_text

#: Metrics of the side-by-side table, in order (those no run has are left out).
#: The summary metrics compared, in table order: every number the report shows.
COMPARE_METRICS = SUMMARY_NUMBER_KEYS

_IGNORED = frozenset({"package_version", "results_path", "export_trace", "seed_list"})
_MAX_LABEL = 60


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return "{...}"
    return str(value)


#: The first column of the side-by-side table: a run may not be labelled so.
RESERVED_LABEL = "metric"


def check_labels(labels: Sequence[str], what: str = "label") -> None:
    """ValueError unless every label is distinct and none is :data:`RESERVED_LABEL`.

    Rows of the table are keyed by label, so two runs under one label would show the
    second run's numbers in both columns, and a run labelled ``metric`` would replace
    the metric names."""
    seen: set[str] = set()
    for label in labels:
        if label == RESERVED_LABEL:
            raise ValueError(
                f"{what} {label!r} is reserved (the name of the table's first column); "
                "choose another"
            )
        if label in seen:
            raise ValueError(f"{what} {label!r} is given to two runs; give each run its own")
        seen.add(label)


def run_labels(runs: Sequence[Results], names: Sequence[str] | None = None) -> list[str]:
    """One distinct label per run (see the module doc); ``names`` win when given."""
    if names is not None:
        if len(names) != len(runs):
            raise ValueError(f"{len(names)} labels for {len(runs)} runs")
        labels = [str(n) for n in names]
        check_labels(labels)
        return labels
    configs = [r.config for r in runs]
    keys: list[str] = []
    for cfg in configs:
        for k in cfg:
            if k not in keys and k not in _IGNORED:
                keys.append(k)
    differing = [
        k for k in keys if len({repr(cfg.get(k)) for cfg in configs}) > 1 and len(runs) > 1
    ]
    labels = []
    for i, cfg in enumerate(configs):
        text = ", ".join(f"{k}={_shown(cfg.get(k))}" for k in differing[:3])
        if len(text) > _MAX_LABEL:
            text = text[: _MAX_LABEL - 3] + "..."
        labels.append(text or f"run {i + 1}")
    if len(set(labels)) < len(labels):  # not enough to tell them apart
        labels = [f"run {i + 1}: {lab}" if lab else f"run {i + 1}" for i, lab in enumerate(labels)]
    return labels


def comparison_rows(
    runs: Sequence[Results], labels: Sequence[str], metrics: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One dict per metric: ``{"metric": name, label1: value, label2: value, ...}``."""
    wanted = list(metrics) if metrics is not None else list(COMPARE_METRICS)
    rows = []
    for m in wanted:
        values = [r.summary.get(m) for r in runs]
        if metrics is None and all(v is None for v in values):
            continue
        row: dict[str, Any] = {"metric": m}
        row.update(dict(zip(labels, values, strict=True)))
        rows.append(row)
    return rows


def compare(
    runs: Sequence[Results] | Mapping[str, Results],
    *,
    metrics: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> Any:
    """Side-by-side table of several runs' summary metrics (one column per run).

    ``runs`` is a list of :class:`Results` (labelled by what differs in their
    configuration) or a mapping ``{label: Results}``. Returns a pandas DataFrame indexed
    by metric when pandas is installed, else the list of row dicts.
    """
    if isinstance(runs, Mapping):
        labels = list(runs) if labels is None else labels
        runs = list(runs.values())
    runs = list(runs)
    if not runs:
        raise ValueError("compare() needs one or more Results (a list or a {label: Results})")
    for i, r in enumerate(runs):
        if not isinstance(r, Results):
            raise ValueError(
                f"compare(): item {i} is a {type(r).__name__}, not Results; load a results "
                "file with Results.load(path)"
            )
    if metrics is not None:
        known = {k for r in runs for k, v in r.summary.items() if isinstance(v, int | float)}
        unknown = [m for m in metrics if m not in known]
        if unknown:
            from inference_sim.core.suggest import did_you_mean

            raise ValueError(
                f"compare(): unknown metric {unknown[0]!r}{did_you_mean(unknown[0], sorted(known))}"
                " (summary keys with numbers, e.g. ttft_p99_ms)"
            )
    names = run_labels(runs, labels)
    rows = comparison_rows(runs, names, metrics)
    from inference_sim.core.extras import have

    if not have("pandas"):
        return rows
    import pandas as pd

    return pd.DataFrame(rows, columns=["metric", *names]).set_index("metric")


# --- the overlay report page ---------------------------------------------------------------


def _cdf_chart(
    runs: Sequence[Results], labels: Sequence[str], key: str, name: str, unit: str
) -> str:
    series = []
    for k, (res, label) in enumerate(zip(runs, labels, strict=True)):
        recs = res.records
        if key == "itl_ms":
            values = [
                float(r[key])
                for r in recs
                if float(r.get("e2e_ms") or 0) > 0 and int(r.get("num_decode_tokens", 0)) > 1
            ]
        else:
            values = [float(r[key]) for r in recs if float(r.get(key) or 0) > 0]
        xs, ys = cdf_points(values)
        series.append(Series(label, xs, ys, color=PALETTE[k % len(PALETTE)], width=2.0))
    return line_chart(
        series,
        title=f"{name} CDF",
        xlabel=unit,
        ylabel="fraction of requests",
        chart_id=f"cmp-cdf-{key}",
        y_max=1.0,
    )


def _ts_chart(
    runs: Sequence[Results],
    labels: Sequence[str],
    col: str,
    title: str,
    unit: str,
    ymax: float | None,
) -> str | None:
    series = []
    for k, (res, label) in enumerate(zip(runs, labels, strict=True)):
        rows = [r for r in table_rows(dict(res.timeseries_table)) if r["instance"] == "cluster"]
        series.append(
            Series(
                label,
                [r["time_s"] for r in rows],
                [r[col] for r in rows],
                color=PALETTE[k % len(PALETTE)],
                width=2.0,
            )
        )
    if not any(s.xs for s in series):
        return None
    return line_chart(
        series,
        title=f"{title} (cluster)",
        xlabel="simulated time (s)",
        ylabel=unit,
        chart_id=f"cmp-ts-{col}",
        y_max=ymax,
    )


def build_comparison(
    runs: Sequence[Results], *, labels: Sequence[str] | None = None, title: str = ""
) -> str:
    """The comparison page as one HTML string (self-contained, like the single-run one)."""
    from inference_sim.report.html import _CHECK_JS, _CSS, TIME_SERIES, _num

    names = run_labels(runs, labels)
    title = title or f"inference-sim comparison of {len(runs)} runs"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}"
        ".swatch{display:inline-block;width:12px;height:12px;border-radius:2px;"
        "margin-right:6px;vertical-align:-1px}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<ul class="legend" id="runs">',
    ]
    for k, (res, name) in enumerate(zip(runs, names, strict=True)):
        cfg = res.config
        what = (
            f"{cfg.get('model', '')} {cfg.get('hardware', '')} TP{cfg.get('tp', '')} "
            f"x{cfg.get('num_instances', 1)}, {workload_text(cfg)}, seed {cfg.get('seed', '')}"
        )
        parts.append(
            f'<li><span class="swatch" style="background:{PALETTE[k % len(PALETTE)]}"></span>'
            f"<b>{escape(name)}</b> &middot; {escape(what)}</li>"
        )
    parts.append("</ul>")

    parts.append("<h2>Summary side by side</h2>")
    rows = comparison_rows(runs, names)
    head = '<th class="l">metric</th>' + "".join(
        f'<th><span class="swatch" style="background:{PALETTE[k % len(PALETTE)]}"></span>'
        f"{escape(n)}</th>"
        for k, n in enumerate(names)
    )
    body = "".join(
        f'<tr><td class="l">{escape(r["metric"])}</td>'
        + "".join(f"<td>{_num(r[n])}</td>" for n in names)
        + "</tr>"
        for r in rows
    )
    parts.append(f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    fidelity = _fidelity_table(runs, names)
    if fidelity:  # runs of the calibrated model: how far to trust each (calibration.md)
        parts.append(fidelity)

    parts.append("<h2>Latency distributions</h2>")
    if any(r.records for r in runs):
        charts = [
            _cdf_chart(runs, names, "ttft_ms", "TTFT", "time to first token (ms)"),
            _cdf_chart(
                runs, names, "itl_ms", "TPOT", "per request: (E2E - TTFT) / (output - 1) (ms)"
            ),
            _cdf_chart(runs, names, "e2e_ms", "E2E", "end-to-end latency (ms)"),
        ]
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
    else:
        parts.append('<p class="note">No per-request records in these results.</p>')

    parts.append("<h2>Over simulated time</h2>")
    ts = [_ts_chart(runs, names, col, t, unit, ymax) for col, t, unit, ymax in TIME_SERIES]
    drawn = [c for c in ts if c]
    if drawn:
        parts.append('<div class="charts">' + "".join(drawn) + "</div>")
    else:
        parts.append('<p class="note">No time series in these results.</p>')
    parts.append(f"<script>{_CHECK_JS}</script></body></html>")
    return "\n".join(parts)


def _fidelity_table(runs: Sequence[Results], names: Sequence[str]) -> str:
    """Each calibrated run's domain and expected error, side by side ("" if none has
    one): comparing two runs means little where one's figures are much less certain."""
    from inference_sim.report.html import _table

    rows = []
    for res, name in zip(runs, names, strict=True):
        fid = res.summary.get("fidelity")
        if not isinstance(fid, Mapping):
            continue
        if fid.get("coefficients") != "shipped":
            rows.append((name, str(fid.get("note", "")), "-", "-", "-", "-"))
            continue
        e = fid.get("expected_abs_error_pct") or {}

        def cell(key: str, e: Mapping[str, Any] = e) -> str:
            return f"{e[key]['median']} % ({e[key]['max']} %)" if key in e else "-"

        rows.append((
            name,
            f"{fid.get('gpu', '')} ({fid.get('gpu_domain', '')}), TP {fid.get('tp', '')}",
            cell("e2e"), cell("tpot"), cell("ttft"),
            "yes" if fid.get("lower_bound") else "no",
        ))  # fmt: skip
    if not rows:
        return ""
    head = ["run", "domain", "E2E |error|", "TPOT |error|", "TTFT |error|", "lower bound"]
    note = (
        '<p class="note">Expected absolute error of the calibrated model, median (worst) '
        "over the matching validation rows (docs/calibration.md); runs of other latency "
        "models have none.</p>"
    )
    return "<h2>Fidelity</h2>" + note + _table(head, rows)


def write_comparison(
    runs: Sequence[Results],
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Write the comparison page (atomically for a regular or new file: ``outfiles``)."""
    from inference_sim.core.outfiles import write_text

    target = Path(path)
    write_text(target, build_comparison(runs, labels=labels, title=title))
    return target
