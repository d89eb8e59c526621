"""``blis sweep SWEEP.yaml --out DIR``: run a sweep file (see docs/sweeps.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from inference_sim.core.logs import each_warning_once
from inference_sim.report.cliutil import check_output, cli_errors, echo_err


@click.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    default=None,
    help="Output folder (default: the sweep file's name without .yaml, plus -results).",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where runs execute: local processes, or a Ray cluster (needs the `ray` extra).",
)
@click.option("--address", default=None, help="Ray cluster address (default: start a local one).")
@click.option("--jobs", "-j", type=int, default=None, help="Runs at once (default: the CPU count).")
@click.option("--force", is_flag=True, default=False, help="Rerun finished runs too.")
@click.option(
    "--seeds",
    default=None,
    help="Run every point once per seed (e.g. 1,2,3); also writes DIR/replicates.parquet "
    "with each metric's mean and confidence interval.",
)
@click.option(
    "--replicates", type=int, default=None, help="Like --seeds: SEED, SEED+1, ... (N seeds)."
)
@click.option(
    "--confidence",
    type=float,
    default=None,
    help="Confidence of the intervals with --seeds/--replicates [default: 0.95].",
)
@click.option("--quiet", "-q", is_flag=True, default=False, help="No per-run lines on stderr.")
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks for errors.")
@each_warning_once()
def sweep_command(
    sweep_file: str,
    out_dir: str | None,
    backend: str,
    address: str | None,
    jobs: int | None,
    force: bool,
    seeds: str | None,
    replicates: int | None,
    confidence: float | None,
    quiet: bool,
    debug: bool,
) -> None:
    """Run every combination of a sweep file in parallel; one table row per run.

    Writes DIR/results.parquet and DIR/results.duckdb (table `runs`); a rerun skips
    finished runs. Needs the `sweep` extra. Exit code 1 when any run failed.
    """
    from inference_sim.sweep.backends import make_backend
    from inference_sim.sweep.run import check_table_extras, format_table, run_sweep
    from inference_sim.sweep.spec import load_sweep

    with cli_errors(debug):
        if jobs is not None and jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        spec = load_sweep(sweep_file)
        from inference_sim.replicates import DEFAULT_CONFIDENCE, check_confidence, seed_list

        base_seed = spec.base.get("seed")  # given, or from the base's config file
        chosen = seed_list(seeds, replicates, int(42 if base_seed is None else base_seed))
        conf = check_confidence(DEFAULT_CONFIDENCE if confidence is None else confidence)
        if chosen is None and confidence is not None:
            raise ValueError("--confidence needs --seeds or --replicates")
        if chosen is not None:
            from inference_sim.sweep.run import with_seeds

            spec = with_seeds(spec, chosen)
        check_table_extras()
        out = Path(out_dir) if out_dir else Path(f"{Path(sweep_file).stem}-results")
        # Before any run: a file in the way or a too-long name fails now, not after.
        check_output("--out", str(out), folder=True)
        runner = make_backend(backend, jobs=jobs, address=address)
    total = len(spec.runs())
    start = time.perf_counter()
    counter = {"n": 0}

    def on_result(run: Any, result: dict[str, Any], reused: bool) -> None:
        counter["n"] += 1
        what = "reused" if reused else result.get("status", "failed")
        extra = ""
        if not reused and "wall_s" in result:
            extra = f" ({result['wall_s']:.1f} s)"
        if result.get("status") != "ok":
            extra += f": {result.get('error', '')}"
        echo_err(f"[{counter['n']}/{total}] run {run.index} {what}{extra}", quiet)

    try:
        with cli_errors(debug):
            outcome = run_sweep(spec, out, backend=runner, force=force, on_result=on_result)
    finally:
        runner.close()
    sys.stdout.write(format_table(outcome, spec))
    if chosen is not None:
        from inference_sim.sweep.run import format_replicates, replicate_rows, write_replicates

        rows = replicate_rows(spec, outcome, conf)
        with cli_errors(debug):
            outcome.files.append(write_replicates(rows, out))
        sys.stdout.write(format_replicates(rows, spec, conf))
    failed = outcome.failed
    ran = len({r.key for r in outcome.runs}) - outcome.reused
    files = ", ".join(str(p) for p in outcome.files)
    click.echo(
        f"{len(outcome.runs)} runs: {ran} run, {outcome.reused} reused, {len(failed)} failed "
        f"in {time.perf_counter() - start:.1f} s -> {files}"
    )
    for run, res in failed:
        click.echo(f"run {run.index} ({run.key}) failed: {res.get('error', '')}", err=True)
    if failed:
        sys.exit(1)
