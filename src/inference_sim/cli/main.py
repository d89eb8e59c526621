"""The ``blis`` command: ``blis run`` simulates, ``blis models`` lists the catalog.

Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the flag or
field; ``--debug`` adds the traceback); 1 a failure during the run; 130 interrupted
(Ctrl-C: ``blis run`` writes the results so far, marked ``"interrupted": true``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

import click

from inference_sim.config.options import OPTIONS, OptionSpec
from inference_sim.core.version import __version__

log = logging.getLogger("inference_sim")

LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


class BadInput(click.ClickException):
    """Bad input: one line on stderr and exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class Interrupted(BadInput):
    """Ctrl-C: one line on stderr and exit code 130 (128 + SIGINT), as shells expect."""

    exit_code = 130


def _click_option(spec: OptionSpec) -> click.Option:
    from inference_sim.report.cliutil import run_option

    return run_option(spec)  # one builder for run, plan and tune (honest defaults)


def _setup_logging(level_name: str) -> None:
    level = LOG_LEVELS.get(level_name.lower())
    if level is None:
        raise BadInput(
            f"--log: unknown level {level_name!r}; valid: {', '.join(sorted(set(LOG_LEVELS)))}"
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _collect(params: dict[str, Any]) -> dict[str, Any]:
    from inference_sim.report.cliutil import collect_run_options

    given = collect_run_options(params)
    given.pop("config", None)  # added by run_command
    return given


#: ``--output`` formats of ``blis run``'s stdout.
OUTPUT_FORMATS = ("text", "json")


def run_command(
    params: dict[str, Any],
    *,
    debug: bool,
    log_level: str,
    progress: bool | None,
    quiet: bool = False,
    output: str = "text",
) -> None:
    from inference_sim.config.errors import ConfigError
    from inference_sim.config.resolve import resolve
    from inference_sim.metrics.output import check_writable
    from inference_sim.report.progress import ProgressBar
    from inference_sim.runner import run_plan
    from inference_sim.workload import WorkloadError

    _setup_logging(log_level)
    if output not in OUTPUT_FORMATS:
        raise BadInput(f"--output: unknown format {output!r}; valid: {', '.join(OUTPUT_FORMATS)}")
    bar = None
    try:
        raw = _collect(params)
        if params.get("config"):
            raw["config"] = params["config"]  # --config FILE: flags given here win
        plan = resolve(raw)
        results_path = plan.options["results_path"]
        to_stdout = results_path == "-"  # the results document is stdout's only content
        if to_stdout and output == "json":
            raise ConfigError(
                "--results-path - and --output json both claim stdout; give one of them"
            )
        if to_stdout:
            results_path = ""
        if results_path:
            try:
                check_writable(results_path)
            except OSError as exc:
                raise ConfigError(f"--results-path {results_path}: cannot write: {exc}") from None
        for note in plan.notes:
            log.info(note)
        if plan.latency_fallback:
            log.warning(
                "latency model %s: %s; --latency-model blackbox requires trained coefficients",
                plan.latency_model,
                plan.latency_reason,
            )
        log.info(
            "starting: model=%s GPU=%s TP=%s blocks=%d alpha=%s beta=%s",
            plan.options["model"],
            plan.options["hardware"],
            plan.options["tp"],
            plan.engine.num_gpu_blocks,
            list(plan.alpha),
            list(plan.beta),
        )
        start = time.perf_counter()
        # A progress bar for runs longer than a second, when stderr is a terminal
        # (--progress: always, --no-progress or --quiet: never).
        if not quiet and (progress or (progress is None and sys.stderr.isatty())):
            bar = ProgressBar(sys.stderr, min_seconds=0.0 if progress else 1.0)
        try:
            # Ctrl-C stops the simulation and keeps the results so far (runner.run_plan).
            results = run_plan(plan, progress=bar, interruptible=True)
        finally:
            if bar is not None:
                bar.close()
    except (ConfigError, WorkloadError) as exc:
        if debug:
            traceback.print_exc()
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted; no results written") from None
    except MemoryError:
        if debug:
            traceback.print_exc()
        raise click.ClickException(
            "simulation failed: out of memory; reduce --num-instances, --total-kv-blocks, "
            "--num-requests or the request lengths"
        ) from None
    except Exception as exc:  # a failure during the run, not bad input
        if debug:
            traceback.print_exc()
        raise click.ClickException(f"simulation failed: {type(exc).__name__}: {exc}") from None
    log.info("simulation wall-clock time: %.3fs", time.perf_counter() - start)
    try:
        if to_stdout:
            sys.stdout.write(json.dumps(results.to_dict(), indent=2) + "\n")
        elif output == "json":
            sys.stdout.write(json.dumps(results.summary_document(), indent=2) + "\n")
        else:
            sys.stdout.write(results.report())
        sys.stdout.flush()
        if results_path:
            try:
                results.write_json(results_path)  # atomic: absent or complete
            except OSError as exc:
                raise click.ClickException(f"--results-path {results_path}: {exc}") from None
            log.info("metrics written to %s", results_path)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while writing the results") from None
    if results.summary.get("interrupted"):
        where = f" to {results_path}" if results_path else ""
        simulated = results.summary.get("vllm_estimated_duration_s", 0)
        click.echo(
            f"Interrupted: partial results of the first {simulated} s of simulated time "
            f'written{where}, marked "interrupted": true',
            err=True,
        )
        raise click.exceptions.Exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="blis (inference-sim)")
def cli() -> None:
    """inference-sim: discrete-event simulation of LLM inference serving."""


def _run(**params: Any) -> None:
    debug = bool(params.pop("debug"))
    quiet = bool(params.pop("quiet"))
    log_level = params.pop("log") or ("error" if quiet else "warn")
    progress = params.pop("progress")
    output = "json" if params.pop("as_json") else params.pop("output") or "text"
    params.pop("output", None)
    run_command(
        params, debug=debug, log_level=log_level, progress=progress, quiet=quiet, output=output
    )


_run_params: list[click.Parameter] = [_click_option(spec) for spec in OPTIONS]
_run_params += [
    click.Option(
        ["--log"],
        default=None,
        help="Log level on stderr: debug, info, warn, error (default: warn; error with --quiet).",
    ),
    click.Option(["--debug"], is_flag=True, default=False, help="Show tracebacks for errors."),
    click.Option(
        ["--progress/--no-progress"],
        default=None,
        help="Progress bar on stderr (default: for runs over 1 s when stderr is a terminal).",
    ),
    click.Option(
        ["--config"],
        default=None,
        help="Read run options from a YAML file (names as flags without dashes); "
        "flags given on the command line win. A results file repeats its run.",
    ),
    click.Option(
        ["--quiet", "-q"],
        is_flag=True,
        default=False,
        help="No progress bar and no warnings on stderr (errors still shown).",
    ),
    click.Option(
        ["--output", "-o", "output"],
        default=None,
        help="stdout format: text (the metrics blocks) or json (one JSON document: the "
        "cluster summary with `instances` nested, nothing else). [default: text]",
    ),
    click.Option(
        ["--json", "as_json"], is_flag=True, default=False, help="Shorthand for --output json."
    ),
]
#: ``blis run --help`` sections: title -> option groups (config/options.py) or names.
_HELP_SECTIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Workload", frozenset({"workload"})),
    ("Model and latency model", frozenset({"model"})),
    ("Engine", frozenset({"engine"})),
    ("Cluster", frozenset({"cluster"})),
    (
        "Output",
        frozenset(
            {
                "results_path",
                "output",
                "as_json",
                "slo",
                "timeseries_interval",
                "trace_level",
                "trace_output",
                "counterfactual_k",
                "summarize_trace",
                "fitness_weights",
                "log",
                "progress",
                "quiet",
            }
        ),
    ),
    ("Run control", frozenset({"run", "seed", "horizon", "config", "debug", "help"})),
)


def _help_section(name: str | None) -> str:
    spec = next((s for s in OPTIONS if s.name == name), None)
    for title, members in _HELP_SECTIONS:
        if name in members:
            return title
    for title, members in _HELP_SECTIONS:
        if spec is not None and spec.group in members:
            return title
    return "Run control"


class _SectionedCommand(click.Command):
    """A command whose --help lists options in sections (workload, engine, ...)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(_help_section(param.name), []).append(record)
        for title, _members in _HELP_SECTIONS:
            if sections.get(title):
                with formatter.section(title):
                    formatter.write_dl(sections[title])


cli.add_command(
    _SectionedCommand(
        "run",
        callback=_run,
        params=_run_params,
        help="Run one simulation; metrics go to stdout, logs to stderr.",
        context_settings={"max_content_width": 110},
    )
)


@cli.command("models")
@click.option(
    "--defaults-filepath", default=None, help="Extra catalog to merge (defaults.yaml format)."
)
def models_command(defaults_filepath: str | None) -> None:
    """List the models, GPUs and TP degrees the catalog has coefficients for."""
    from inference_sim.catalog import CatalogError, format_models_table, load_catalog, models_table

    try:
        catalog = load_catalog(defaults_filepath)
    except CatalogError as exc:
        raise BadInput(str(exc)) from None
    click.echo(format_models_table(models_table(catalog)))


@cli.group("workload")
def workload_group() -> None:
    """Inspect workload specs and traces."""


@workload_group.command("describe")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--block-size",
    type=int,
    default=None,
    help="Tokens per prompt block for the reuse ratio (default 16; a Mooncake trace's "
    "hash-id block size, default 512).",
)
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
@click.option(
    "--format",
    "fmt",
    default="auto",
    help="auto (from the content), spec, csv, v2, azure or mooncake.",
)
@click.option("--seed", type=int, default=None, help="Seed for a spec (default: its own).")
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks for errors.")
def describe_command(
    file: str, block_size: int | None, as_json: bool, fmt: str, seed: int | None, debug: bool
) -> None:
    """Summarise a workload spec or trace: requests, duration, rate, lengths, prefix reuse."""
    from inference_sim.workload import WorkloadError
    from inference_sim.workload.describe import (
        describe_workload,
        description_json,
        format_description,
    )

    try:
        d = describe_workload(file, block_size=block_size, fmt=fmt, seed=seed)
    except WorkloadError as exc:
        if debug:
            traceback.print_exc()
        raise BadInput(str(exc)) from None
    click.echo(description_json(d) if as_json else format_description(d), nl=as_json)


def _add_tool_commands() -> None:
    """sweep, report, plot, plan, tune, calibrate: defined in their own packages."""
    from inference_sim.calibrate.cli import calibrate_command
    from inference_sim.planning.cli import plan_command, tune_command
    from inference_sim.report.cli import plot_command, report_command
    from inference_sim.sweep.cli import sweep_command

    for command in (
        sweep_command,
        report_command,
        plot_command,
        plan_command,
        tune_command,
        calibrate_command,
    ):
        cli.add_command(command)


_add_tool_commands()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="blis")


if __name__ == "__main__":  # pragma: no cover
    main()
