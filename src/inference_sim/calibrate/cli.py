"""``blis calibrate``: fit the calibrated latency model to measured runs."""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from dataclasses import replace
from datetime import date
from typing import Any

import click

__all__ = ["calibrate_command"]


class _BadInput(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _parse_fix(items: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise _BadInput(f"--fix {item!r}: expected NAME=VALUE")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise _BadInput(f"--fix {item!r}: {value!r} is not a number") from None
    return out


@click.command("calibrate")
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--out",
    "-o",
    "out",
    default="calibrated-coeffs.json",
    show_default=True,
    help="Coefficients file to write (use it with --latency-coeffs).",
)
@click.option("--hardware", default="", help="GPU of runs whose files do not name one.")
@click.option(
    "--model", default="", help="Model of an inference-perf folder without exp-config.yaml."
)
@click.option(
    "--tp", type=int, default=0, help="TP of an inference-perf folder (default: exp-config.yaml)."
)
@click.option(
    "--max-num-batched-tokens",
    type=int,
    default=0,
    help="Token budget of an inference-perf folder (default: exp-config.yaml).",
)
@click.option(
    "--total-kv-blocks",
    type=int,
    default=0,
    help="KV blocks of an inference-perf folder (default: derived from GPU memory).",
)
@click.option("--start", default="", help="Starting coefficients file (default: the shipped set).")
@click.option(
    "--params", default="", help="Comma-separated coefficients to fit (default: all fitted ones)."
)
@click.option("--fix", multiple=True, help="NAME=VALUE: hold a coefficient fixed (repeatable).")
@click.option(
    "--duration-scale",
    type=float,
    default=0.2,
    show_default=True,
    help="Shorten every stage to this fraction while fitting.",
)
@click.option(
    "--min-stage-s",
    type=float,
    default=90.0,
    show_default=True,
    help="Shortest stage (s) while fitting.",
)
@click.option(
    "--no-length-correction",
    is_flag=True,
    default=False,
    help="Do not correct shortened stages by full-length simulations.",
)
@click.option(
    "--prefix-reuse",
    type=click.Choice(["run", "cycle", "profile"]),
    default="run",
    show_default=True,
    help="cycle: the load tool's fixed prompt set (10x10, cycled); profile: the "
    "profile's groups, a fresh question per request; run: the file's setting.",
)
@click.option(
    "--prompt-scale",
    type=float,
    default=1.05,
    show_default=True,
    help="Served/nominal prompt length when a run does not report prompt_len_mean.",
)
@click.option(
    "--max-evals", type=int, default=25, show_default=True, help="Simulations per optimiser round."
)
@click.option(
    "--rounds",
    type=int,
    default=2,
    show_default=True,
    help="Optimiser rounds (length corrections refreshed between them).",
)
@click.option(
    "--prior-weight",
    type=float,
    default=0.3,
    show_default=True,
    help="Weight of the coefficients' priors (0: none).",
)
@click.option("--jobs", "-j", type=int, default=0, help="Worker processes (default: CPU count).")
@click.option(
    "--evaluate-only",
    is_flag=True,
    default=False,
    help="No fit: print the errors of --start (or the shipped set).",
)
@click.option(
    "--write-specs",
    default="",
    help="Write each run's workload spec and `blis run` command to this folder and exit.",
)
@click.option(
    "--report", "report_path", default="", help="Also write the per-run errors (JSON) here."
)
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress lines.")
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks for errors.")
def calibrate_command(**kw: Any) -> None:
    """Fit the calibrated latency model to measured runs (CSV, YAML or inference-perf folders).

    RUNS are CSV files with the columns of the vLLM training table, YAML files with
    `runs:`, or inference-perf output folders (docs/calibration.md). The fit replays
    every run in the simulator (shortened stages, in parallel), adjusts the coefficients
    with scipy's least squares, writes them to --out and prints per-run and median
    absolute percentage errors of TTFT, E2E and TPOT at full stage length.
    """
    try:
        _calibrate(**kw)
    except (ValueError, OSError) as exc:
        if kw["debug"]:
            traceback.print_exc()
        raise _BadInput(str(exc)) from None


def _calibrate(**kw: Any) -> None:
    from inference_sim.calibrate.fit import FitOptions, Simulator, fit_coefficients
    from inference_sim.calibrate.harness import ReplaySettings
    from inference_sim.calibrate.report import error_rows, format_table, medians
    from inference_sim.calibrate.runs import load_runs
    from inference_sim.core.outfiles import OutputFile
    from inference_sim.latency.calibrated import (
        FITTED_FIELDS,
        default_coefficients,
        load_coefficients,
    )

    quiet = kw["quiet"]
    _check_numbers(kw)

    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    folder_kw = {
        k: kw[k] for k in ("model", "tp", "max_num_batched_tokens", "total_kv_blocks") if kw[k]
    }
    from inference_sim.report.cliutil import check_output

    outputs = []
    for flag, key in (("--out", "out"), ("--report", "report_path")):  # before the fit
        if kw[key] and not (key == "out" and (kw["evaluate_only"] or kw["write_specs"])):
            check_output(flag, kw[key])
            outputs.append((flag, kw[key]))
    _refuse_input_overwrite(outputs, kw["runs"], kw["start"])
    if folder_kw and not any(os.path.isdir(p) for p in kw["runs"]):
        flag = "--" + next(iter(folder_kw)).replace("_", "-")
        raise _BadInput(
            f"{flag}: only for an inference-perf result folder; a CSV or YAML of runs names "
            "each run's own (no RUNS argument here is a folder)"
        )
    runs = load_runs(kw["runs"], hardware=kw["hardware"], warn=_warn, **folder_kw)
    reuse = "" if kw["prefix_reuse"] == "run" else kw["prefix_reuse"]
    full = ReplaySettings(prefix_reuse=reuse, prompt_scale=kw["prompt_scale"])
    fixed = _parse_fix(kw["fix"])  # names checked even where unused (--write-specs)
    unknown = sorted(set(fixed) - set(FITTED_FIELDS))
    if unknown:
        raise ValueError(f"--fix: unknown coefficient(s) {', '.join(unknown)}")
    params = tuple(p.strip() for p in kw["params"].split(",") if p.strip()) or FITTED_FIELDS
    bad = sorted(set(params) - set(FITTED_FIELDS))
    if bad:
        raise ValueError(
            f"--params: unknown coefficient(s) {', '.join(bad)}; known: {', '.join(FITTED_FIELDS)}"
        )
    if kw["write_specs"]:
        _write_specs(runs, kw["write_specs"], full)
        return
    start = load_coefficients(kw["start"]) if kw["start"] else default_coefficients()
    if fixed:
        start = start.with_values(fixed)
    params = tuple(p for p in params if p not in fixed)
    short = ReplaySettings(
        duration_scale=kw["duration_scale"],
        min_stage_s=kw["min_stage_s"],
        prefix_reuse=reuse,
        prompt_scale=kw["prompt_scale"],
    )
    with Simulator(kw["jobs"]) as sim:
        coeffs = start
        info: dict[str, Any] = {}
        if not kw["evaluate_only"]:
            if not params:
                raise ValueError("nothing to fit: every coefficient is fixed")
            opts = FitOptions(
                params=params,
                prior_weight=kw["prior_weight"],
                max_evals=kw["max_evals"],
                rounds=kw["rounds"],
                settings=short,
                full_settings=None if kw["no_length_correction"] else full,
                workers=kw["jobs"],
            )
            say(
                f"fitting {len(params)} coefficients to {len(runs)} runs "
                f"({sim.workers} workers, stages x{short.duration_scale:g})"
            )
            res = fit_coefficients(runs, start=start, options=opts, simulator=sim, log=say)
            coeffs = res.coefficients
            # The wall-clock time is said, not stored: the same command on the same runs
            # writes the same file, byte for byte (docs/calibration.md, "Output").
            say(f"fitted in {res.seconds:.1f} s ({res.evaluations} evaluations)")
            info = {"evaluations": res.evaluations}
            _warn_if_worse_than_start(res, coeffs, kw["start"], short)
            _warn_at_bounds(res)
        say("evaluating at full stage length")
        results = sim.run(runs, coefficients=coeffs, settings=full)
    rows = error_rows(runs, results)
    click.echo(format_table(rows))
    med = medians(rows)
    empty = [
        run.name
        for run, r in zip(runs, results, strict=True)
        if isinstance(r, list) and r and all(st.completed == 0 for st in r)
    ]
    if empty:
        # Every request dropped as unservable or rejected as too long: 100 % errors that
        # say nothing about the coefficients (a KV count or max_model_len the measured
        # server could not have run with).
        _warn(
            f"{len(empty)} run(s) completed no request ({', '.join(empty)}): check their "
            "total_kv_blocks and max_model_len; they count as failed"
        )
    crashed = [
        run.name
        for run, r in zip(runs, results, strict=True)
        if isinstance(r, Exception) or r is None
    ]
    if crashed:
        # Their rows show the error and have no errors to take a median of: say that the
        # medians above are over the other runs only.
        _warn(
            f"{len(crashed)} run(s) failed to simulate and are left out of the medians "
            f"({', '.join(crashed)}): see their rows"
        )
    failed = len(crashed) + len(empty)
    if not kw["evaluate_only"]:
        # This fit's own record (the start set's history -- its data, validation tables,
        # source -- does not describe these coefficients).
        meta = {
            "fitted": date.today().isoformat(),
            "data": f"{len(runs)} run(s) from {', '.join(kw['runs'])}",
            "started_from": kw["start"] or "the shipped set",
            "runs": [r.name for r in runs],
            "fitted_params": list(params),
            "settings": short.to_dict(),
            "median_ape_pct": {k: round(v, 2) for k, v in med.items()},
            "command": "blis calibrate " + " ".join(sys.argv[2:])
            if sys.argv[1:2] == ["calibrate"]
            else "",
            **info,
        }
        if empty:
            meta["runs_without_completions"] = empty
        out = replace(coeffs, meta=meta, source="fitted by blis calibrate (docs/calibration.md)")
        with OutputFile(kw["out"]) as fh:  # atomic, or through a device/FIFO
            json.dump({"format": "inference-sim-calibrated/1", **out.to_dict()}, fh, indent=2)
            fh.write("\n")
        say(f"wrote {kw['out']} (use: blis run --latency-coeffs {kw['out']} ...)")
    if kw["report_path"]:
        with OutputFile(kw["report_path"]) as fh:
            json.dump(
                {"rows": rows, "median_ape_pct": med, "coefficients": coeffs.to_dict()},
                fh,
                indent=2,
            )
    if kw["evaluate_only"] and runs and failed == len(runs):
        click.echo(f"Error: all {failed} runs failed to simulate (see the table)", err=True)
        raise click.exceptions.Exit(1)


def _warn(msg: str) -> None:
    """A warning on stderr, shown with --quiet too."""
    click.echo(f"Warning: {msg}", err=True)


def _warn_if_worse_than_start(res: Any, coeffs: Any, start_path: str, short: Any = None) -> None:
    """The fit weighs the data against the priors: on a few runs it can end with the
    runs themselves fitting worse than the start set did. Say so (keep ``--start``, or
    fit more runs) rather than write a file that looks like an improvement. The errors
    compared are the fit's own, at the shortened stage length it simulates (``short``);
    they get as many digits as it takes to tell them apart."""
    history = getattr(res, "history", None) or []
    if not history:
        return
    start_rms = float(history[0]["rms"])
    chosen = coeffs.to_dict()
    final = next((float(h["rms"]) for h in history if h["coefficients"] == chosen), None)
    if final is not None and final > start_rms * 1.001:
        nd = 4
        while nd < 8 and f"{final:.{nd}f}" == f"{start_rms:.{nd}f}":
            nd += 1
        at = ""
        if short is not None and short.duration_scale < 1:
            at = (
                f" at the shortened stage length the fit simulates (stages x"
                f"{short.duration_scale:g}, at least {short.min_stage_s:g} s; the table "
                "is at full length)"
            )
        _warn(
            f"the fitted coefficients fit these runs worse than "
            f"{start_path or 'the shipped set'} (rms log-error {final:.{nd}f} against "
            f"{start_rms:.{nd}f}){at}: the priors outweigh a few runs; keep the start set or "
            "fit more runs"
        )


def _warn_at_bounds(res: Any) -> None:
    """Coefficients the fit drove to a bound of their prior: the runs asked for more than
    the physics allows (GEMMs faster than peak, an overhead of 0), which usually means
    runs the model cannot explain -- values in other units, settings that are not the
    server's -- rather than a better fit."""
    hits = getattr(res, "at_bounds", None) or []
    if hits:
        said = ", ".join(f"{name} at its {side} bound {bound:g}" for name, side, bound in hits)
        _warn(
            f"the fit ended with {said}: the runs push past what the priors call physical; "
            "check their units and settings, or hold them with --fix (docs/calibration.md)"
        )


def _refuse_input_overwrite(
    outputs: list[tuple[str, str]], runs: tuple[str, ...], start: str
) -> None:
    """ValueError (exit 2) when ``--out`` or ``--report`` names a file calibrate reads
    (a RUNS file, a file of a RUNS folder, the ``--start`` coefficients) or each other:
    ``--report runs.csv`` used to replace the measurements with the report. The rules
    and the message are ``blis run``'s (:func:`inference_sim.core.outfiles.refuse_overlaps`)."""
    from inference_sim.core.outfiles import OutputPathError, refuse_overlaps

    inputs = []
    for path in runs:
        if os.path.isdir(path):  # an inference-perf folder: the files read from it
            for folder in (path, os.path.join(path, "results")):
                if os.path.isdir(folder):
                    inputs += [
                        ("RUNS", os.path.join(folder, n)) for n in sorted(os.listdir(folder))
                    ]
        else:
            inputs.append(("RUNS", path))
    if start:
        inputs.append(("--start", start))
    try:
        refuse_overlaps(outputs, inputs)
    except OutputPathError as exc:
        raise ValueError(str(exc)) from None


def _file_stem(name: str, taken: set[str]) -> str:
    """A file name (no extension) for a run name that stays inside the specs folder:
    characters other than [A-Za-z0-9._-] become '_', it never starts with '.', and a
    name that collides (case-insensitively) with an earlier one gets -2, -3, ..."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:150] or "run"
    if stem.startswith("."):
        stem = "_" + stem[1:]
    base, n = stem, 1
    while stem.lower() in taken:
        n += 1
        stem = f"{base}-{n}"
    taken.add(stem.lower())
    return stem


def _write_specs(runs: list[Any], folder: str, settings: Any) -> None:
    import shlex

    import yaml

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--write-specs {folder}: exists and is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"--write-specs {folder}: cannot create the folder: {exc.strerror or exc}"
        ) from None
    lines = []
    taken: set[str] = set()
    for run in runs:
        spec = run.workload_spec(
            prefix_reuse=settings.prefix_reuse,
            prompt_scale=settings.prompt_scale,
            seed=settings.seed,
        )
        stem = _file_stem(run.name, taken)
        path = os.path.join(folder, f"{stem}.yaml")
        head = f"{run.name}: {run.model} on {run.hardware} TP{run.tp} ({run.workload})"
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("# " + " ".join(head.split()) + "\n")  # one comment line
            yaml.safe_dump(spec, fh, sort_keys=False)
        results = os.path.join(folder, f"{stem}-results.json")
        lines.append(run.command(path) + " --results-path " + shlex.quote(results))
    cmd_path = os.path.join(folder, "commands.sh")
    with open(cmd_path, "w", encoding="utf-8") as fh:
        fh.write("#!/bin/sh\n# One `blis run` per measured run; per-stage metrics are in each\n")
        fh.write("# results file's summary `stages` list (ttft/e2e means, itl_mean_ms = TPOT).\n")
        fh.write("set -e\n")
        for line in lines:
            fh.write(line + "\n")
    click.echo(f"wrote {len(runs)} workload specs and {cmd_path}")


def _check_numbers(kw: dict[str, Any]) -> None:
    """One-line errors for numeric options out of range, before any run is read or
    simulated (a negative prompt scale used to fail inside a temporary workload file)."""
    import math

    for flag, key, low, strict in (
        ("--prompt-scale", "prompt_scale", 0.0, True),
        ("--duration-scale", "duration_scale", 0.0, True),
        ("--min-stage-s", "min_stage_s", 0.0, False),
        ("--prior-weight", "prior_weight", 0.0, False),
    ):
        v = kw[key]
        if not math.isfinite(v) or v < low or (strict and v == low):
            raise ValueError(f"{flag} must be a finite number {'>' if strict else '>='} 0, got {v}")
    if kw["duration_scale"] > 1:
        raise ValueError(f"--duration-scale must be <= 1 (a fraction), got {kw['duration_scale']}")
    for flag, key in (("--max-evals", "max_evals"), ("--rounds", "rounds")):
        if kw[key] < 1:
            raise ValueError(f"{flag} must be >= 1, got {kw[key]}")
