"""``blis report``: one self-contained HTML page for a run's results.

The page needs no network: charts are inline SVG, styles are inline, and the only
script is a small inline self-check that marks each chart it finds drawn
(``data-rendered``) and records the counts on ``<body>`` (``data-charts``,
``data-charts-rendered``, ``data-errors``), so a headless browser can verify the page.

Sections: headline metrics, latency CDFs (TTFT, TPOT, E2E; one line per SLO class
when there are several), cluster signals over time, the same per instance, tables per
instance, per SLO class and per load stage, and the resolved configuration.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from inference_sim.metrics.stats import mean_ms, percentile_ms
from inference_sim.metrics.timeseries import table_rows
from inference_sim.report.scaling import autoscaling_html, pd_html
from inference_sim.report.svg import Series, cdf_points, line_chart
from inference_sim.results import Results, unused_workload_options, workload_text

HEADLINE = (
    ("completed_requests", "completed"),
    ("responses_per_sec", "requests/s"),
    ("tokens_per_sec", "output tokens/s"),
    ("ttft_mean_ms", "TTFT mean (ms)"),
    ("ttft_p99_ms", "TTFT p99 (ms)"),
    ("tpot_mean_ms", "TPOT mean (ms)"),
    ("tpot_p99_ms", "TPOT p99 (ms)"),
    ("itl_mean_ms", "ITL mean (ms)"),
    ("itl_p99_ms", "ITL p99 (ms)"),
    ("e2e_mean_ms", "E2E mean (ms)"),
    ("e2e_p99_ms", "E2E p99 (ms)"),
    ("prefix_cache_hit_rate", "cache hit rate"),
    ("preemption_count", "preemptions"),
    ("rejected_requests", "rejected"),
)

TIME_SERIES = (
    ("queue_depth", "Queue depth", "waiting requests", None),
    ("running", "Running batch", "requests in batch", None),
    ("kv_utilization", "KV cache utilisation", "fraction of blocks", 1.0),
    ("cache_hit_rate", "Prefix cache hit rate", "cached / prompt tokens", 1.0),
    ("tokens_per_sec", "Throughput", "output tokens/s", None),
    ("requests_per_sec", "Completions", "requests/s", None),
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;
 background:#fff;max-width:1500px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;
 padding-bottom:4px} .sub{color:#666;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card .v{font-size:18px;font-weight:600} .card .k{font-size:12px;color:#666}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{border:1px solid #eee;border-radius:4px;background:#fff}
svg .title{font-size:13px;font-weight:600;fill:#222} svg .tick{font-size:10px;fill:#555}
svg .label{font-size:11px;fill:#333} svg .legend{font-size:10px;fill:#333}
svg .plot{fill:#fcfcfc;stroke:#ccc} svg .grid{stroke:#eee}
svg .ref{stroke:#c00;stroke-dasharray:6,4}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f5f5f5}
td.l,th.l{text-align:left} .note{color:#666;font-size:12px}
"""

_CHECK_JS = """
(function(){
  var errors = [];
  window.addEventListener('error', function(e){ errors.push(String(e.message || e)); });
  function check(){
    var charts = document.querySelectorAll('svg.chart');
    var ok = 0;
    for (var i = 0; i < charts.length; i++) {
      var c = charts[i], box = c.getBoundingClientRect();
      var marks = c.querySelectorAll('.mark');
      var drawn = 0;
      for (var j = 0; j < marks.length; j++) {
        var b = marks[j].getBBox();
        if (b.width > 0 || b.height > 0) drawn++;
      }
      if (box.width > 0 && box.height > 0 && drawn > 0) {
        c.setAttribute('data-rendered', '1'); ok++;
      } else {
        c.setAttribute('data-rendered', '0');
      }
    }
    document.body.setAttribute('data-charts', String(charts.length));
    document.body.setAttribute('data-charts-rendered', String(ok));
    document.body.setAttribute('data-errors', String(errors.length));
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', check);
  } else { check(); }
})();
"""


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.1f}"
        if abs(v) >= 1:
            return f"{v:,.2f}"
        return f"{v:.4g}"
    if v is None:
        return ""
    return escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(header)
    )
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="{"l" if i < left else ""}">{_num(v)}</td>' for i, v in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _latency_charts(records: Sequence[Mapping[str, Any]]) -> list[str]:
    classes = sorted({str(r.get("slo_class") or "") for r in records})
    groups: list[tuple[str, list[Mapping[str, Any]]]] = [("all requests", list(records))]
    if len(classes) > 1:
        for c in classes:
            groups.append(
                (c or "(no class)", [r for r in records if (r.get("slo_class") or "") == c])
            )
    charts = []
    for key, name, unit_title in (
        ("ttft_ms", "TTFT", "time to first token (ms)"),
        ("itl_ms", "TPOT", "time per output token (ms)"),
        ("e2e_ms", "E2E", "end-to-end latency (ms)"),
    ):
        series = []
        for k, (label, rows) in enumerate(groups):
            done = [r for r in rows if float(r.get("e2e_ms") or 0) > 0]
            if key == "itl_ms":
                values = [float(r[key]) for r in done if int(r.get("num_decode_tokens", 0)) > 1]
            elif key == "ttft_ms":
                values = [float(r[key]) for r in rows if float(r.get(key) or 0) > 0]
            else:
                values = [float(r[key]) for r in done]
            xs, ys = cdf_points(values)
            series.append(Series(label, xs, ys, width=2.4 if k == 0 else 1.4, dashed=k > 0))
        charts.append(
            line_chart(
                series,
                title=f"{name} CDF",
                xlabel=unit_title,
                ylabel="fraction of requests",
                chart_id=f"cdf-{key}",
                y_max=1.0,
            )
        )
    return charts


def _timeseries_charts(table: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    rows = table_rows(dict(table))
    if not rows:
        return [], []
    names = []
    for r in rows:
        if r["instance"] not in names:
            names.append(r["instance"])
    by_name = {n: [r for r in rows if r["instance"] == n] for n in names}
    cluster = by_name.get("cluster", [])
    instances = [n for n in names if n != "cluster"]
    cluster_charts, instance_charts = [], []
    for col, title, unit, ymax in TIME_SERIES:
        cluster_series = [
            Series(
                "cluster",
                [r["time_s"] for r in cluster],
                [r[col] for r in cluster],
                color="#222",
                width=2.0,
            )
        ]
        cluster_charts.append(
            line_chart(
                cluster_series,
                title=f"{title} (cluster)",
                xlabel="simulated time (s)",
                ylabel=unit,
                chart_id=f"ts-cluster-{col}",
                y_max=ymax,
            )
        )
        if len(instances) > 1:
            series = [
                Series(n, [r["time_s"] for r in by_name[n]], [r[col] for r in by_name[n]])
                for n in instances
            ]
            instance_charts.append(
                line_chart(
                    series,
                    title=f"{title} per instance",
                    xlabel="simulated time (s)",
                    ylabel=unit,
                    chart_id=f"ts-instances-{col}",
                    y_max=ymax,
                )
            )
    return cluster_charts, instance_charts


def _instance_table(instances: Sequence[Mapping[str, Any]]) -> str:
    cols = (
        "completed_requests",
        "responses_per_sec",
        "ttft_mean_ms",
        "ttft_p99_ms",
        "itl_mean_ms",
        "e2e_mean_ms",
        "e2e_p99_ms",
        "prefix_cache_hit_rate",
        "preemption_count",
    )
    rows = [[s.get("instance_id", ""), *(s.get(c) for c in cols)] for s in instances]
    return _table(["instance", *cols], rows)


def _slo_table(per_slo: Mapping[str, Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for m in per_slo.values():
        for k in m:
            if k not in keys and isinstance(m[k], int | float):
                keys.append(k)
    rows = [[cls, *(per_slo[cls].get(k) for k in keys)] for cls in sorted(per_slo)]
    return _table(["SLO class", *keys], rows)


#: Run-wide LoRA figures (the summary's ``lora`` section, docs/lora.md) shown above the
#: per-adapter and per-instance tables.
_LORA_KEYS = (
    "max_loras",
    "max_cpu_loras",
    "max_lora_rank",
    "adapter_loads",
    "adapter_evictions",
    "requests_skipped_for_max_loras",
    "skip_events_for_max_loras",
)
_LORA_ADAPTER_COLS = (
    "completed_requests",
    "ttft_mean_ms",
    "ttft_p99_ms",
    "e2e_mean_ms",
    "e2e_p99_ms",
    "responses_per_sec",
)


def _lora_section(lora: Mapping[str, Any]) -> str:
    """Multi-LoRA serving: loads, evictions, requests held back by --max-loras, and the
    latency of each adapter's requests and each instance's adapter traffic."""
    parts = ["<h2>LoRA adapters</h2>"]
    parts.append(_table(["figure", "value"], [(k, lora[k]) for k in _LORA_KEYS if k in lora]))
    adapters = lora.get("adapters") or {}
    if adapters:
        rows = [(name, *(a.get(c, "") for c in _LORA_ADAPTER_COLS)) for name, a in adapters.items()]
        parts.append(_table(["adapter", *_LORA_ADAPTER_COLS], rows))
    instances = lora.get("instances") or {}
    if instances:
        cols = sorted({c for v in instances.values() for c in v})
        rows = [(name, *(v.get(c, "") for c in cols)) for name, v in instances.items()]
        parts.append(_table(["instance", *cols], rows))
    return "\n".join(parts)


def _stage_table(stages: Sequence[Mapping[str, Any]]) -> str:
    cols = [
        "start_s",
        "end_s",
        "rate",
        "arrived_requests",
        "completed_requests",
        "responses_per_sec",
        "ttft_mean_ms",
        "ttft_p99_ms",
        "itl_mean_ms",
        "e2e_mean_ms",
        "e2e_p99_ms",
    ]
    rows = [[s.get("stage", i), *(s.get(c) for c in cols)] for i, s in enumerate(stages)]
    return _table(["stage", *cols], rows)


def _latency_text(summary: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """``calibrated (auto fallback: no trained entry for H100/TP8 ...)``: what ran and why."""
    model = str(summary.get("latency_model") or config.get("latency_model") or "?")
    reason = summary.get("latency_model_reason")
    return f"{model} ({reason})" if reason else model


def _with_tpot(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``summary`` with ``tpot_mean_ms``/``tpot_p99_ms`` (docs/results.md), computed from
    the records when the results file predates those keys.

    TPOT is per request, (E2E - TTFT) / (output - 1), each request once: the statistic
    the TPOT CDF plots. ITL counts every token gap instead; the two differ."""
    out = dict(summary)
    if "tpot_mean_ms" in out or not records:
        return out
    values = sorted(
        float(r["itl_ms"]) * 1000.0
        for r in records
        if float(r.get("e2e_ms") or 0) > 0 and int(r.get("num_decode_tokens", 0)) > 1
    )
    out["tpot_mean_ms"] = mean_ms(values)
    out["tpot_p99_ms"] = percentile_ms(values, 99)
    return out


def _fidelity_section(fid: Mapping[str, Any]) -> str:
    """How far the run is from the calibrated model's training data (latency/fidelity.py)."""
    out = ["<h2>Fidelity</h2>"]
    if fid.get("coefficients") != "shipped":
        out.append(f'<p class="note">{escape(str(fid.get("note", "")))}</p>')
        return "\n".join(out)
    seen = {"model": "in training", "family": "family in training", "no": "not in training"}
    bound = " &mdash; <b>a lower bound</b>: part of this run is outside the validated domain"
    out.append(
        '<p class="note">Calibrated model, fitted on '
        f"{escape(str(fid.get('training_domain', '')))}. Expected absolute error of the "
        f"per-stage means, from {escape(str(fid.get('basis', '')))}"
        f"{bound if fid.get('lower_bound') else ''}.</p>"
    )
    in_training = "in training" if fid.get("tp_seen") else "not in training"
    family_seen = seen.get(str(fid.get("model_seen")), "")  # str(): any JSON value
    rows = [
        ("GPU", f"{fid.get('gpu', '')} ({fid.get('gpu_domain', '')})"),
        ("model family", f"{fid.get('model_family', '')} ({family_seen})"),
        ("TP", f"{fid.get('tp', '')} ({in_training})"),
        ("architecture", "mixture of experts" if fid.get("moe") else "dense"),
    ]
    out.append(_table(["domain", "this run"], rows))
    expected = fid.get("expected_abs_error_pct") or {}
    err_rows = [
        (label, f"{expected[key]['median']} %", f"{expected[key]['max']} %", expected[key]["rows"])
        for key, label in (("e2e", "E2E mean"), ("tpot", "TPOT mean"), ("ttft", "TTFT mean"))
        if key in expected
    ]
    out.append(_table(["metric", "median |error|", "worst row", "rows"], err_rows))
    caveats = fid.get("caveats") or []
    if caveats:
        out.append("<ul>" + "".join(f"<li>{escape(str(c))}</li>" for c in caveats) + "</ul>")
    return "\n".join(out)


def build_report(results: Results, *, title: str = "") -> str:
    """The report page as one HTML string."""
    s = _with_tpot(results.summary, results.records)
    config = results.config
    model = config.get("model", "")
    if not title:
        title = f"inference-sim report: {model}" if model else "inference-sim report"
    sub = []
    if config:
        sub.append(
            f"{escape(str(config.get('hardware', '')))} TP{escape(str(config.get('tp', '')))}"
            f" &middot; {escape(str(config.get('num_instances', 1)))} instance(s)"
            f" &middot; {escape(workload_text(config))}"
            f" &middot; seed {escape(str(config.get('seed', '')))}"
            f" &middot; latency model {escape(_latency_text(s, config))}"
            f" &middot; inference-sim {escape(str(config.get('package_version', '')))}"
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<div class="sub">{" ".join(sub)}</div>',
        '<div class="cards">',
    ]
    for key, label in HEADLINE:
        if key in s:
            parts.append(
                f'<div class="card"><div class="v">{_num(s[key])}</div>'
                f'<div class="k">{escape(label)}</div></div>'
            )
    parts.append("</div>")

    fidelity = s.get("fidelity")
    if isinstance(fidelity, dict):
        parts.append(_fidelity_section(fidelity))

    parts.append("<h2>Latency distributions</h2>")
    if results.records:
        parts.append('<div class="charts">' + "".join(_latency_charts(results.records)) + "</div>")
    else:
        parts.append('<p class="note">No per-request records in these results.</p>')

    cluster_charts, instance_charts = _timeseries_charts(results.timeseries_table)
    parts.append("<h2>Over simulated time</h2>")
    if cluster_charts:
        interval = results.timeseries_table.get("interval_us", 0)  # checked by the reader
        parts.append(
            f'<p class="note">Sampled every {_num(interval)} µs of simulated time; rates and the '
            "hit rate cover the interval before each sample.</p>"
        )
        parts.append('<div class="charts">' + "".join(cluster_charts) + "</div>")
    else:
        parts.append('<p class="note">No time series in these results.</p>')
    if instance_charts:
        parts.append("<h2>Per instance over simulated time</h2>")
        parts.append('<div class="charts">' + "".join(instance_charts) + "</div>")

    if results.instance_summaries:
        parts.append("<h2>Per instance</h2>")
        parts.append(_instance_table(results.instance_summaries))
    per_slo = s.get("slo_metrics") or {}
    if per_slo:
        parts.append("<h2>Per SLO class</h2>")
        parts.append(_slo_table(per_slo))
    stages = s.get("stages") or []
    if stages:
        parts.append("<h2>Per load stage</h2>")
        parts.append(_stage_table(stages))
    if s.get("pd"):
        parts.append(pd_html(s["pd"]))
    if s.get("autoscaling"):
        parts.append(autoscaling_html(s["autoscaling"]))
    if isinstance(s.get("lora"), dict):
        parts.append(_lora_section(s["lora"]))

    parts.append("<h2>All metrics</h2>")
    flat = [
        (k, v)
        for k, v in s.items()
        if k != "instance_id" and not isinstance(v, dict | list | tuple)
    ]
    parts.append(_table(["metric", "value"], flat))
    if config:
        parts.append("<h2>Configuration</h2>")
        unused = set(unused_workload_options(config))
        rows = [
            (k, ", ".join(map(str, v)) if isinstance(v, list) else v)
            for k, v in config.items()
            if k not in unused
        ]
        parts.append(_table(["option", "value"], rows, left=2))
        left_out = [k for k in config if k in unused]
        if left_out:
            parts.append(
                f'<p class="note">Not shown: {escape(", ".join(left_out))}, which did not '
                f"shape the requests of this run ({escape(workload_text(config))}); the "
                "results file keeps them for a replay.</p>"
            )
    parts.append(f"<script>{_CHECK_JS}</script></body></html>")
    return "\n".join(parts)


def write_report(results: Results, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write the report page (atomically for a regular or new file: ``outfiles``)."""
    from inference_sim.core.outfiles import write_text

    target = Path(path)
    write_text(target, build_report(results, title=title))
    return target
