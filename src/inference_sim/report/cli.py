"""``blis report`` (self-contained HTML) and ``blis plot`` (PNG figures)."""

from __future__ import annotations

import json

import click

from inference_sim.report.cliutil import check_output, cli_errors


def _load(path: str):  # type: ignore[no-untyped-def]
    from inference_sim.results import Results

    try:
        return Results.load(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file or folder") from None
    except (OSError, ValueError) as exc:
        why = str(exc)
        if isinstance(exc, json.JSONDecodeError):
            why = f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        if why.startswith(f"{path}: "):  # the reader named the file already
            raise ValueError(why) from None
        raise ValueError(f"{path}: not a results file: {why}") from None


def _check_report_output(results: str, output: str) -> None:
    """ValueError (exit 2) when ``-o`` cannot be written or would replace the input."""
    import os

    from inference_sim.core.outfiles import OutputPathError, refuse_overlaps

    check_output("--output", output)
    inputs = [("RESULTS", results)]
    if os.path.isdir(results):  # a to_parquet() folder: the files read from it
        names = ("summary.json", "requests.parquet", "timeseries.parquet")
        inputs += [("RESULTS", os.path.join(results, n)) for n in names]
    try:
        refuse_overlaps([("--output", output)], inputs)
    except OutputPathError as exc:
        raise ValueError(str(exc)) from None


@click.command("report")
@click.argument("results", type=click.Path(), nargs=-1, required=True)
@click.option(
    "--output", "-o", default="report.html", show_default=True, help="The HTML file to write."
)
@click.option("--title", default="", help="Page title (default: from the model).")
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Name of each run in a comparison, in order (repeat once per RESULTS; each "
    "distinct, not `metric`; default: the options that differ, e.g. rate=20).",
)
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks for errors.")
def report_command(
    results: tuple[str, ...], output: str, title: str, labels: tuple[str, ...], debug: bool
) -> None:
    """Write one self-contained HTML page (no network needed) for a run's results.

    RESULTS is a results file (`blis run --results-path`) or a folder written by
    `Results.to_parquet()`. The page has latency CDFs (TTFT, TPOT, E2E), the time
    series per instance and for the cluster, per-instance, per-SLO-class and
    per-stage tables, and the run's configuration.

    With several RESULTS, the page compares them: every run's CDFs and cluster time
    series overlaid (one colour per run, with a legend) and the summary metrics side
    by side.
    """
    from inference_sim.report.compare import check_labels, write_comparison
    from inference_sim.report.html import write_report

    with cli_errors(debug):
        if labels and len(labels) != len(results):
            raise ValueError(
                f"--label given {len(labels)} time(s) for {len(results)} results; "
                "give one per results file, in order"
            )
        check_labels(labels, "--label")  # distinct, and not the table's `metric` column
        for r in results:  # before reading: fail fast, replace no input
            _check_report_output(r, output)
        runs = [_load(r) for r in results]
        if len(runs) == 1 and not labels:
            path = write_report(runs[0], output, title=title)
        else:
            path = write_comparison(runs, output, labels=labels or None, title=title)
    click.echo(f"report written to {path}")


@click.command("plot")
@click.argument("results", type=click.Path())
@click.option(
    "--output", "-o", default="plots", show_default=True, help="Folder for the PNG files."
)
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks for errors.")
def plot_command(results: str, output: str, debug: bool) -> None:
    """Write the report's figures as PNG files (needs the `plot` extra: matplotlib).

    RESULTS is a results file or a `to_parquet()` folder. Writes latency_cdf.png,
    timeseries_cluster.png and (2+ instances) timeseries_instances.png, and removes
    those of these three an earlier run left that this run does not have.
    """
    from inference_sim.core.extras import require

    with cli_errors(debug):
        check_output("--output", output, folder=True)  # before reading the results
        require("matplotlib", "plot", "blis plot")
        from inference_sim.report.plots import write_plots

        res = _load(results)
        paths = write_plots(res, output)
    for p in paths:
        click.echo(str(p))
