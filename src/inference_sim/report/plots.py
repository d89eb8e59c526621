"""``blis plot``: the report's figures as PNG files (needs the ``plot`` extra, matplotlib).

Files written to the output folder:

* ``latency_cdf.png``: TTFT, TPOT and E2E CDFs (one line per SLO class when several);
* ``timeseries_cluster.png``: queue depth, running batch, KV utilisation, cache hit
  rate, output tokens/s and completions/s of the whole cluster over simulated time;
* ``timeseries_instances.png``: the same per instance (2+ instances only).

A figure this run does not have (per instance for one instance, time series for results
without them) is removed from the folder if an earlier run left it there.

``blis plan --plot FILE.png`` uses :func:`plot_plan` (latency against request rate).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference_sim.core.extras import require
from inference_sim.metrics.timeseries import table_rows
from inference_sim.report.svg import cdf_points
from inference_sim.results import Results

_TS = (
    ("queue_depth", "queue depth (waiting)"),
    ("running", "running batch"),
    ("kv_utilization", "KV utilisation"),
    ("cache_hit_rate", "prefix cache hit rate"),
    ("tokens_per_sec", "output tokens/s"),
    ("requests_per_sec", "completions/s"),
)


def _pyplot() -> Any:
    require("matplotlib", "plot", "blis plot")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from inference_sim.core.outfiles import output_path

    with output_path(path) as tmp:  # absent or complete; the temporary file always goes
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def write_plots(results: Results, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the PNG figures for ``results`` into ``out_dir``; returns their paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    records = results.records
    classes = sorted({str(r.get("slo_class") or "") for r in records})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, name) in zip(
        axes, (("ttft_ms", "TTFT"), ("itl_ms", "TPOT"), ("e2e_ms", "E2E")), strict=True
    ):
        groups = [("all", records)]
        if len(classes) > 1:
            groups += [
                (c or "(none)", [r for r in records if (r.get("slo_class") or "") == c])
                for c in classes
            ]
        for label, rows in groups:
            done = [r for r in rows if float(r.get("e2e_ms") or 0) > 0]
            if key == "itl_ms":
                vals = [r[key] for r in done if int(r.get("num_decode_tokens", 0)) > 1]
            elif key == "ttft_ms":
                vals = [r[key] for r in rows if float(r.get(key) or 0) > 0]
            else:
                vals = [r[key] for r in done]
            xs, ys = cdf_points(vals, 1000)
            ax.plot(xs, ys, label=label, drawstyle="steps-post")
        ax.set_title(f"{name} CDF")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out / "latency_cdf.png"))
    plt.close(fig)

    rows = table_rows(results.timeseries_table)
    if rows:
        names: list[str] = []
        for r in rows:
            if r["instance"] not in names:
                names.append(r["instance"])
        groups_ts = {n: [r for r in rows if r["instance"] == n] for n in names}
        targets = [("timeseries_cluster.png", ["cluster"])]
        instances = [n for n in names if n != "cluster"]
        if len(instances) > 1:
            targets.append(("timeseries_instances.png", instances))
        for filename, series in targets:
            fig, axes = plt.subplots(2, 3, figsize=(15, 7), sharex=True)
            for ax, (col, label) in zip(axes.flat, _TS, strict=True):
                for n in series:
                    pts = groups_ts[n]
                    ax.plot(
                        [p["time_s"] for p in pts], [_nan(p[col]) for p in pts], label=n, lw=1.2
                    )
                ax.set_title(label)
                ax.grid(alpha=0.3)
            for ax in axes[-1]:
                ax.set_xlabel("simulated time (s)")
            if len(series) > 1:
                axes.flat[0].legend(fontsize=7, ncol=2)
            fig.tight_layout()
            written.append(_save(fig, out / filename))
            plt.close(fig)
    _remove_stale(out, written)
    return written


#: Every file :func:`write_plots` may write; the only files it ever removes.
PLOT_FILES = ("latency_cdf.png", "timeseries_cluster.png", "timeseries_instances.png")


def _remove_stale(out: Path, written: Sequence[Path]) -> None:
    """Remove the figures of :data:`PLOT_FILES` this run did not draw: a folder used
    before for a 4-instance run would otherwise keep its ``timeseries_instances.png``
    beside this 1-instance run's figures, as if it were this run's."""
    kept = {p.name for p in written}
    for name in PLOT_FILES:
        stale = out / name
        if name not in kept and (stale.is_file() or stale.is_symlink()):
            stale.unlink(missing_ok=True)


def plot_plan(outcome: Any, path: str | os.PathLike[str]) -> Path:
    """Each SLO metric against request rate, per candidate at its chosen instance count."""
    plt = _pyplot()
    objectives: Sequence[Any] = outcome.objectives
    metrics = [o for o in objectives] or []
    n = max(1, len(metrics))
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, obj in zip(axes[0], metrics, strict=False):
        for cand in outcome.candidates:
            if cand.instances is None:
                continue
            pts = sorted(
                (p.rate, p.summary.get(obj.metric))
                for p in cand.probes
                if p.instances == cand.instances
            )
            if not pts:
                continue
            label = f"{cand.deployment.label()} x{cand.instances}"
            ax.plot([p[0] for p in pts], [_nan(p[1]) for p in pts], marker="o", label=label)
        ax.axhline(obj.bound, color="red", ls="--", lw=1, label=f"SLO {obj.op} {obj.bound:g}")
        ax.axvline(outcome.rate, color="grey", ls=":", lw=1)
        ax.set_xlabel("request rate (requests/s)")
        ax.set_ylabel(obj.metric)
        ax.set_title(f"{obj.metric} vs rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    target = Path(path)
    out = _save(fig, target)
    plt.close(fig)
    return out
