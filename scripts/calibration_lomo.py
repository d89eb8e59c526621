#!/usr/bin/env python
"""Fit the shipped calibrated coefficients and the leave-one-model-out (LOMO) table.

    PYTHONPATH=src python scripts/calibration_lomo.py \\
        ../shared/calibration/vllm-0.15.1/training_runs.csv --jobs 2 --write

1. Fits every coefficient to all runs (``blis calibrate``'s fitter, from the priors).
   With ``--write`` this becomes ``src/inference_sim/catalog/data/calibrated.json``.
2. For each model, fits again on the other models' runs only (same start, same budget)
   and predicts the held-out model's runs at full stage length.
3. Simulates the same runs with the pure roofline model and, where the catalog has
   trained coefficients for the deployment, the blackbox model.
4. Writes docs/calibration-lomo.md (per run and stage, side by side), the raw rows
   (docs/calibration-lomo.json), a predicted-vs-measured plot (docs/calibration-lomo.svg)
   and refreshes the medians block of docs/calibration.md.

Budget: about 35-50 minutes on 2 cores (the fits dominate; see --max-evals). The data are
not in the repository (see docs/calibration.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from inference_sim.calibrate.fit import FitOptions, Simulator, fit_coefficients  # noqa: E402
from inference_sim.calibrate.harness import ReplaySettings  # noqa: E402
from inference_sim.calibrate.report import (  # noqa: E402
    error_rows,
    markdown_table,
    medians,
    medians_by_tp,
    scatter_svg,
)
from inference_sim.calibrate.runs import load_runs  # noqa: E402
from inference_sim.latency.calibrated import CalibratedCoefficients  # noqa: E402

#: Trained (blackbox) stand-ins: same architecture, different checkpoint name.
BLACKBOX_STANDIN = {"meta-llama/llama-3.1-70b-instruct": "meta-llama/llama-3.3-70b-instruct"}
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "calibration", "vllm-0.15.1", "training_runs.csv")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "runs", nargs="*", default=[DEFAULT_DATA], help="measured runs (CSV/YAML/folders)"
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-evals", type=int, default=14, help="simulations in the first round")
    ap.add_argument("--polish-evals", type=int, default=6, help="simulations in the second round")
    ap.add_argument("--duration-scale", type=float, default=0.2)
    ap.add_argument("--min-stage-s", type=float, default=90.0)
    ap.add_argument("--prefix-reuse", default="", choices=["", "cycle", "profile"])
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--write", action="store_true", help="write catalog/data/calibrated.json")
    ap.add_argument("--no-lomo", action="store_true")
    ap.add_argument("--tag", default="calibration-lomo", help="output file stem under --docs")
    ap.add_argument(
        "--rerender",
        action="store_true",
        help="no fits: rewrite the docs from the existing <docs>/<tag>.json (table layout only)",
    )
    args = ap.parse_args(argv)
    if args.rerender:
        return _rerender(args)

    t_start = time.time()
    runs = load_runs(args.runs)
    short = ReplaySettings(
        duration_scale=args.duration_scale,
        min_stage_s=args.min_stage_s,
        prefix_reuse=args.prefix_reuse,
    )
    full = ReplaySettings(prefix_reuse=args.prefix_reuse)
    log = lambda s: print(s, flush=True)  # noqa: E731
    timings: dict[str, float] = {}

    def options(evals: int, rounds: int = 2) -> FitOptions:
        return FitOptions(
            max_evals=evals, rounds=rounds, settings=short, full_settings=full, workers=args.jobs
        )

    with Simulator(args.jobs) as sim:
        # 1. all runs
        log(f"== fit on all {len(runs)} runs")
        t0 = time.time()
        opts = options(args.max_evals)
        opts_rounds = [args.max_evals, args.polish_evals]
        res = _fit(runs, opts, opts_rounds, sim, log)
        timings["fit_all_s"] = time.time() - t0
        coeffs = res.coefficients
        in_sample = sim.run(runs, coefficients=coeffs, settings=full)
        rows_in = error_rows(runs, in_sample, label="calibrated (all runs)")

        # 2. leave one model out
        rows_lomo: list[dict] = []
        fold_coeffs: dict[str, dict] = {}
        if not args.no_lomo:
            models = sorted({r.model for r in runs})
            t0 = time.time()
            for model in models:
                train = [r for r in runs if r.model != model]
                test = [r for r in runs if r.model == model]
                log(f"== fold: hold out {model} ({len(test)} runs), fit on {len(train)}")
                fres = _fit(train, options(args.max_evals), opts_rounds, sim, log)
                fold_coeffs[model] = fres.coefficients.to_dict()
                pred = sim.run(test, coefficients=fres.coefficients, settings=full)
                rows_lomo.extend(error_rows(test, pred, label=f"LOMO ({model} held out)"))
            timings["lomo_s"] = time.time() - t0
            order = {(r.name, st.index): i for i, r in enumerate(runs) for st in r.stages}
            rows_lomo.sort(key=lambda r: order[(r["run"], r["stage"])])

        # 3. baselines
        log("== roofline and blackbox on the same runs")
        t0 = time.time()
        roof = sim.run(runs, latency_model="roofline", settings=full)
        rows_roof = error_rows(runs, roof, label="roofline")
        bb_runs = [replace(r, model=BLACKBOX_STANDIN.get(r.model, r.model)) for r in runs]
        bb = sim.run(bb_runs, latency_model="blackbox", settings=full)
        bb = [None if isinstance(x, Exception) else x for x in bb]
        rows_bb = error_rows(runs, bb, label="blackbox")
        timings["baselines_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start

    command = "PYTHONPATH=src python scripts/calibration_lomo.py " + " ".join(
        a if not os.path.isabs(a) else os.path.relpath(a, ROOT) for a in (argv or sys.argv[1:])
    )
    today = date.today().isoformat()
    meta = {
        "fitted": today,
        "command": command,
        "data": "vLLM v0.15.1 training runs (15 runs, 6 models, H100, TP 1-4)",
        "runs": [r.name for r in runs],
        "settings": short.to_dict(),
        "evaluations": res.evaluations,
        "median_ape_pct_in_sample": {k: round(v, 2) for k, v in medians(rows_in).items()},
    }
    if rows_lomo:
        meta["median_ape_pct_lomo"] = {k: round(v, 2) for k, v in medians(rows_lomo).items()}
    shipped = replace(
        coeffs,
        source="fitted by scripts/calibration_lomo.py to real vLLM v0.15.1 runs "
        "(docs/calibration.md)",
        meta=meta,
    )
    if args.write:
        path = os.path.join(ROOT, "src", "inference_sim", "catalog", "data", "calibrated.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"format": "inference-sim-calibrated/1", **shipped.to_dict()}, fh, indent=2)
            fh.write("\n")
        log(f"wrote {path}")
    _write_docs(
        args, rows_in, rows_lomo, rows_roof, rows_bb, shipped, fold_coeffs, timings, command, today
    )
    if args.write:  # the fidelity data every calibrated run reports (issue 19)
        import runpy

        runpy.run_path(os.path.join(ROOT, "scripts", "fidelity_table.py"))["main"]([])
    return 0


def _rerender(args) -> int:
    """Rewrite the docs from a previous run's JSON (same rows, same date and command)."""
    path = os.path.join(args.docs, args.tag + ".json")
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    rows = doc["rows"]
    _write_docs(
        args,
        rows["in-sample"],
        rows.get("LOMO", []),
        rows["roofline"],
        rows["blackbox"],
        CalibratedCoefficients.from_mapping(doc["coefficients"]),
        doc["folds"],
        doc["timings"],
        doc["command"],
        doc["generated"],
    )
    print(f"rewrote the docs from {path}")
    return 0


def _fit(runs, opts, rounds, sim, log):
    """Round 1 with ``rounds[0]`` simulations, then a polish round with refreshed corrections."""
    opts.max_evals = rounds[0]
    opts.rounds = 1
    first = fit_coefficients(runs, options=opts, simulator=sim, log=log)
    opts.max_evals = rounds[1]
    second = fit_coefficients(runs, start=first.coefficients, options=opts, simulator=sim, log=log)
    second.evaluations += first.evaluations
    return second


def _write_docs(
    args, rows_in, rows_lomo, rows_roof, rows_bb, coeffs, folds, timings, command, today
):
    os.makedirs(args.docs, exist_ok=True)
    stem = os.path.join(args.docs, args.tag)
    cols = []
    if rows_lomo:
        cols.append(("LOMO", rows_lomo))
    cols += [("in-sample", rows_in), ("roofline", rows_roof), ("blackbox", rows_bb)]
    table = markdown_table(cols)
    meds = {title: medians(rows) for title, rows in cols}
    lines = [
        "# Calibrated latency model: leave-one-model-out errors",
        "",
        f"Generated {today} by `{command}` "
        f"({timings.get('total_s', 0) / 60:.0f} min on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}).",
        "Do not edit by hand; see [calibration.md](calibration.md) for what the columns mean.",
        "",
        "Absolute percentage error of the per-stage means, per run and stage. **LOMO**: fitted on",
        "the other models' runs only, predicting this model's runs. **in-sample**: the shipped",
        "coefficients (fitted on all runs). **roofline**: the pure roofline model with the",
        "catalog's GPU constants. **blackbox**: trained coefficients of the catalog (vLLM",
        "v0.8.4) for the",
        "deployment, where there are any (Llama-3.1-70B uses the Llama-3.3-70B entry, the same",
        "architecture); n/a elsewhere. TPOT is compared with the reported `itl_mean_ms`.",
        "",
        table,
        "",
        "Medians of TPOT* (against (E2E - TTFT) / (output_len - 1), the tokens actually "
        "generated): " + ", ".join(f"{t} {meds[t]['tpot_true_ape']:.1f}%" for t, _ in cols),
        "",
        f"{cols[0][0]} medians by TP (TTFT / E2E / TPOT*): "
        + "; ".join(
            f"TP {tp} ({n} rows) {m['ttft_ape']:.1f} / {m['e2e_ape']:.1f} / "
            f"{m['tpot_true_ape']:.1f} %"
            for tp, (n, m) in medians_by_tp(cols[0][1]).items()
        ),
        "",
        "## Coefficients",
        "",
        "| coefficient | shipped (all runs) | "
        + " | ".join(f"without {m.split('/')[-1]}" for m in folds)
        + " |",
        "|---|---:|" + "---:|" * len(folds),
    ]
    cd = coeffs.to_dict()
    for name, value in cd.items():
        if name in ("meta", "source", "async_scheduling", "smooth_p"):
            continue
        cells = [f"{folds[m][name]:.4g}" for m in folds]
        lines.append(f"| `{name}` | {value:.4g} | " + " | ".join(cells) + " |")
    lines += ["", f"Timings (s): {', '.join(f'{k} {v:.0f}' for k, v in timings.items())}", ""]
    # Keep the leave-one-GPU-out block (scripts/calibration_logo.py writes it).
    old_text = ""
    if os.path.exists(stem + ".md"):
        with open(stem + ".md", encoding="utf-8") as fh:
            old_text = fh.read()
    begin, end = "<!-- logo:begin -->", "<!-- logo:end -->"
    if begin in old_text and end in old_text:
        block = old_text[old_text.index(begin) : old_text.index(end) + len(end)]
        lines += [block, ""]
    with open(stem + ".md", "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    with open(stem + ".json", "w", encoding="utf-8") as fh:
        json.dump(
            {
                "generated": today,
                "command": command,
                "medians": meds,
                "rows": {t: r for t, r in cols},
                "coefficients": cd,
                "folds": folds,
                "timings": timings,
            },
            fh,
            indent=1,
            default=float,
        )
    src = rows_lomo or rows_in
    series = []
    for m, unit in (("ttft", "ms"), ("e2e", "ms"), ("tpot", "ms")):
        pts = [(r[f"{m}_meas"], r[f"{m}_sim"]) for r in src if f"{m}_sim" in r]
        series.append((m.upper(), unit, pts))
    title = (
        "Leave-one-model-out: predicted vs measured per-stage means" if rows_lomo else "In-sample"
    )
    with open(stem + ".svg", "w", encoding="utf-8") as fh:
        fh.write(scatter_svg(series, title=title))
    # Refresh the medians block of docs/calibration.md.
    doc = os.path.join(args.docs, "calibration.md")
    if os.path.exists(doc):
        with open(doc, encoding="utf-8") as fh:
            text = fh.read()
        begin, end = "<!-- lomo:begin -->", "<!-- lomo:end -->"
        if begin in text and end in text:
            block = [
                begin,
                "",
                f"Generated {today} by `{command}`:",
                "",
                "| model | TTFT | E2E | TPOT | TPOT* |",
                "|---|---:|---:|---:|---:|",
            ]
            for t, _ in cols:
                m = meds[t]
                block.append(
                    f"| {t} | {m['ttft_ape']:.1f}% | {m['e2e_ape']:.1f}% | {m['tpot_ape']:.1f}% "
                    f"| {m['tpot_true_ape']:.1f}% |"
                )
            block += ["", end]
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            with open(doc, "w", encoding="utf-8") as fh:
                fh.write(head + "\n".join(block) + tail)


if __name__ == "__main__":
    raise SystemExit(main())
