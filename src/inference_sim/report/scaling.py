"""Report sections for disaggregated and autoscaled runs (docs/disaggregation.md,
docs/autoscaling.md): the replica counts over time as a chart, scale events, GPU-hours
and cost; the P/D transfer figures and per-pool latencies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from inference_sim.report.svg import Series, line_chart


def _steps(ts: Sequence[float], ys: Sequence[int]) -> tuple[list[float], list[float]]:
    """A step line: each count holds until the next change."""
    xs: list[float] = []
    out: list[float] = []
    for i, (t, y) in enumerate(zip(ts, ys, strict=True)):
        if i:
            xs.append(t)
            out.append(out[-1])
        xs.append(t)
        out.append(float(y))
    return xs, out


def _rows(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A table whose cells are formatted as the report's other tables format them
    (``_num``: 12.26, 216.8, 31,820,087,296), not as raw floats (12.260200000000001)."""
    from inference_sim.report.html import _num  # html imports this module

    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def autoscaling_html(a: Mapping[str, Any]) -> str:
    """One part per autoscaled pool (P/D) or one for the cluster."""
    pools = a.get("pools")
    if not pools:
        return _pool_html(a, "", "autoscaling-replicas")
    parts = [
        f"<h2>Autoscaling</h2><p>{a.get('gpu_hours', 0):.3f} GPU-hours, cost "
        f"{a.get('cost', 0):.2f} over the autoscaled pools.</p>"
    ]
    for name, p in pools.items():
        parts.append(_pool_html(p, name, f"autoscaling-replicas-{name}"))
    return "\n".join(parts)


def _pool_html(a: Mapping[str, Any], pool: str, chart_id: str) -> str:
    """The replicas chart, the cost line and the scale events."""
    rep = a.get("replicas") or {}
    ts = list(rep.get("t_s") or [])
    parts = [f"<h3>{escape(pool)} pool</h3>" if pool else "<h2>Autoscaling</h2>"]
    parts.append(
        f"<p>{a.get('min_replicas')}..{a.get('max_replicas')} replicas on "
        f"{escape(str(a.get('metric')))} (target {a.get('target')}); start-up "
        f"{a.get('replica_startup_s', 0):.1f} s; {a.get('gpu_hours', 0):.3f} GPU-hours, cost "
        f"{a.get('cost', 0):.2f} at {a.get('gpu_hour_price', 0):.2f} per GPU-hour.</p>"
    )
    if ts:
        series = []
        for key, color in (("ready", "#1b7837"), ("loading", "#e08214"), ("draining", "#762a83")):
            xs, ys = _steps(ts, rep.get(key) or [0] * len(ts))
            series.append(Series(key, xs, ys, color=color))
        parts.append(
            '<div class="charts">'
            + line_chart(
                series,
                title="Replicas over simulated time",
                xlabel="simulated time (s)",
                ylabel="replicas",
                chart_id=chart_id,
            )
            + "</div>"
        )
    events = a.get("events") or []
    if events:
        rows = [
            (f"{e.get('t_s', 0):.3f}", e.get("kind", ""), e.get("by", e.get("replica", "")),
             e.get("reason", ""))
            for e in events
        ]  # fmt: skip
        parts.append(_rows(rows, ["time (s)", "event", "by / replica", "reason"]))
    parts.append(_scaling_latency(a.get("latency") or {}))
    return "\n".join(parts)


def _scaling_latency(lat: Mapping[str, Any]) -> str:
    """Latency of the requests that arrived while replicas loaded or drained, beside
    the others: what the scaling itself costs the clients."""
    cols = ["completed_requests", "ttft_mean_ms", "ttft_p90_ms", "ttft_p99_ms", "e2e_p90_ms"]
    rows = [
        (label, *(_fmt(lat[key].get(c, "")) for c in cols))
        for key, label in (("during_scaling", "during scaling"), ("steady", "steady"))
        if isinstance(lat.get(key), Mapping)
    ]
    if not rows:
        return ""
    spans = lat.get("scaling_periods_s") or []
    head = (
        f"<p>Requests by arrival: during the {len(spans)} period(s) in which a replica was "
        "loading or draining, and outside them.</p>"
    )
    return head + _rows(rows, ["arrived", *cols])


def _fmt(v: Any) -> Any:
    return f"{v:.1f}" if isinstance(v, float) else v


def pd_html(pd: Mapping[str, Any]) -> str:
    """Transfer figures and one latency row per pool."""
    parts = ["<h2>Prefill/decode disaggregation</h2>"]
    keys = [
        "disaggregated_requests", "colocated_requests", "transfers", "transfer_bytes",
        "kv_transfer_p50_ms", "kv_transfer_p90_ms", "kv_transfer_p99_ms",
        "peak_concurrent_transfers", "waited_for_decode_kv",
    ]  # fmt: skip
    parts.append(_rows([(k, pd.get(k, "")) for k in keys], ["figure", "value"]))
    pools = pd.get("pools") or {}
    cols = ["instances", "hardware", "tp", "latency_model", "completed_requests",
            "ttft_p90_ms", "itl_p99_ms", "total_kv_blocks"]  # fmt: skip
    rows = [(name, *(p.get(c, "") for c in cols)) for name, p in pools.items()]
    if rows:
        parts.append(_rows(rows, ["pool", *cols]))
    return "\n".join(parts)
