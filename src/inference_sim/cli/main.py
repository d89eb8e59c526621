"""The ``blis`` command: ``blis run`` simulates, ``blis models`` lists the catalog.

Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the flag or
field, ``Error: ...``; a usage error such as an unknown flag ends with ``(see 'blis run
--help')``; ``--debug`` adds the traceback); 1 a failure during the run; 130 interrupted
(Ctrl-C: ``blis run`` writes the results so far, marked ``"interrupted": true``); 143
terminated (SIGTERM, handled as Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import click

from inference_sim.config.options import OPTIONS, OptionSpec
from inference_sim.core.version import __version__
from inference_sim.interrupts import Abandoned, RunSignals, exit_code_for, signal_name

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
    """Ctrl-C: one line on stderr and exit code 130 (128 + SIGINT), as shells expect;
    143 (128 + SIGTERM) for SIGTERM."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageLine(click.UsageError):
    """A usage error (unknown flag, bad flag value, missing argument, no command) as
    one line on stderr, exit code 2, like every other bad input (DECISIONS.md, exit
    codes): click's own form is four lines (usage, hint, blank, error), which scripts
    reading stderr's first line, and users, take for a crash or miss the error in."""

    def __init__(self, message: str, command_path: str = "blis") -> None:
        super().__init__(f"{message} (see '{command_path} --help')")

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


def _one_line(exc: click.UsageError, fallback_path: str = "blis") -> UsageLine:
    """``exc`` as a :class:`UsageLine`: its message on one line, then where the help is
    (the command of ``exc``'s context; ``fallback_path`` for errors click raises
    without one, such as a flag missing its value)."""
    if isinstance(exc, UsageLine):
        return exc
    ctx = exc.ctx
    path = ctx.command_path if ctx is not None else fallback_path
    if isinstance(exc, click.exceptions.NoArgsIsHelpError) and ctx is not None:
        # a group without its command (`blis`, `blis workload`): name the commands
        group = ctx.command
        names = group.list_commands(ctx) if isinstance(group, click.Group) else []
        message = f"no command given; commands: {', '.join(names)}"
    else:
        message = " ".join(exc.format_message().split())  # one line, whatever click wrote
        # click's "No such option '--x'. (Did you mean '--y'?)" -> "...; did you mean ...?"
        message = re.sub(r"\.? \(?Did you mean (.*)\?\)?$", r"; did you mean \1?", message)
    return UsageLine(message.rstrip("."), path)


class BlisGroup(click.Group):
    """``blis``: click's group with every usage error of it and its commands as one line
    (:class:`UsageLine`) and Go-style ``--flag=true|false`` for on/off run flags, the
    same in-process (``CliRunner``, ``cli.main``) as from the console script. ``--help``
    and ``--version`` exit 0 as click's; the commands' own errors keep their form."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            _check_bool_values(argv)
        except UsageLine as exc:
            if not standalone_mode:
                raise
            exc.show()
            sys.exit(exc.exit_code)
        argv = _bool_values(argv)
        return super().main(argv, prog_name, complete_var, standalone_mode, **extra)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # `blis` alone, `blis --foo`
            raise _one_line(exc) from None
        ctx.meta["blis.args"] = list(args)  # the command path of errors without a context
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a command's flags and arguments, `blis runn`
            raise _one_line(exc, _command_path(ctx.meta.get("blis.args", []))) from None


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


def _short(version: str) -> str:
    """``vllm/vllm-openai:v0.8.4`` -> ``v0.8.4`` (the image tag is the version)."""
    return version.rsplit(":", 1)[-1] if version else version


def fallback_warning(plan: Any) -> str:
    """What ``auto`` did when the deployment has no trained coefficients: which entry is
    missing and what runs instead, with the error to expect of it.

    Said as what happened, not as a mistake: the user may never have named a latency
    model (an explicit ``--latency-model blackbox`` refuses to fall back instead)."""
    o = plan.options
    model, version = o["model"], o["vllm_version"]
    sets = plan.catalog.coefficient_sets(model)
    if not sets:
        what = f"no trained coefficients for {model} (the catalog has none for this model)"
    else:
        where = f"{o['hardware']}/TP{o['tp']}"
        if version:
            what = f"no trained coefficients for {model} on {where} (vLLM {_short(version)})"
        else:
            what = (
                f"no trained coefficients for {model} on {where} without a vLLM version "
                "(no catalog default; give --vllm-version)"
            )
        trained = sorted(
            {
                f"{cs.gpu}/TP{cs.tp}"
                + ("" if cs.vllm_version == version else f" (vLLM {_short(cs.vllm_version)})")
                for cs in sets
            }
        )
        what += f"; trained: {', '.join(trained)}"
    from inference_sim.config.fidelity import plan_fidelity

    fid = plan_fidelity(plan)
    expected = ""
    e2e = ((fid or {}).get("expected_abs_error_pct") or {}).get("e2e")
    if isinstance(e2e, dict) and "median" in e2e:
        bound = "at least " if (fid or {}).get("lower_bound") else ""
        expected = (
            f" (expected E2E-mean error {bound}{e2e['median']} % median; "
            "--log info prints the fidelity line)"
        )
    return f"{what}; using the {plan.latency_model} model{expected}"


def step_coefficients_text(plan: Any) -> str:
    """The step-time inputs of the ``starting:`` line: alpha/beta where they price the
    steps, the coefficient set of the calibrated model (whose alpha/beta are unused)."""
    coeffs = plan.latency_coeffs
    if coeffs is None:
        return f"alpha={list(plan.alpha)} beta={list(plan.beta)}"
    path = plan.options.get("latency_coeffs")
    where = f"--latency-coeffs {path}" if path else "the shipped set"
    source = f": {coeffs.source}" if coeffs.source else ""
    return f"latency model {plan.latency_model}: coefficients from {where}{source}"


def _collect(params: dict[str, Any]) -> dict[str, Any]:
    from inference_sim.config.numbers import leading_zero_problem, parse_integer
    from inference_sim.report.cliutil import collect_run_options

    given = collect_run_options(params)
    given.pop("config", None)  # added by run_command
    horizon = given.get("horizon")
    if isinstance(horizon, str):  # a duration (10s) or, as the reference's int64, 0x10
        problem = leading_zero_problem(horizon)
        if problem:
            raise BadInput(f"--horizon: {problem}")
        if horizon.strip().lstrip("+-")[:2].lower() in ("0x", "0o", "0b"):
            number = parse_integer(horizon)
            if number is not None:
                given["horizon"] = number
    return given


def _warn_unread_defaults(raw: dict[str, Any]) -> None:
    """One warning when ``./defaults.yaml`` exists but neither the command line nor the
    ``--config`` file names ``--defaults-filepath``: the reference would read it, so
    users with their own coefficients there would get other numbers without a hint."""
    from inference_sim.catalog.loader import unread_defaults_note
    from inference_sim.config.errors import ConfigError
    from inference_sim.config.resolve import load_run_config

    if raw.get("defaults_filepath"):
        return
    if raw.get("config"):
        try:
            if load_run_config(raw["config"]).get("defaults_filepath"):
                return
        except ConfigError:
            pass  # the run reports the file's problem itself
    note = unread_defaults_note()
    if note:
        log.warning("%s", note)


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
    _setup_logging(log_level)
    if output not in OUTPUT_FORMATS:
        raise BadInput(f"--output: unknown format {output!r}; valid: {', '.join(OUTPUT_FORMATS)}")
    # SIGINT/SIGTERM for the whole command: at start-up they end it at once; once the
    # run has started, a first one still writes complete (maybe partial) results and a
    # second one abandons (inference_sim.interrupts).
    with RunSignals() as signals:
        results, results_path = _run_and_write(
            params, signals, debug=debug, progress=progress, quiet=quiet, output=output
        )
    if signals.interrupted:
        where = f" to {results_path}" if results_path else ""
        what = signals.first_name.capitalize()
        if results.summary.get("interrupted"):
            simulated = results.summary.get("vllm_estimated_duration_s", 0)
            click.echo(
                f"{what}: partial results of the first {simulated} s of simulated time "
                f'written{where}, marked "interrupted": true',
                err=True,
            )
        else:
            click.echo(
                f"{what} after the simulation had finished: complete results written{where}",
                err=True,
            )
        raise click.exceptions.Exit(signals.exit_code)


def _run_and_write(
    params: dict[str, Any],
    signals: RunSignals,
    *,
    debug: bool,
    progress: bool | None,
    quiet: bool,
    output: str,
) -> tuple[Any, str]:
    """Resolve, check every output path, run, print and write; (results, results path)."""
    bar = None
    written = ""  # the results file, once it is complete
    try:
        from inference_sim.config.errors import ConfigError
        from inference_sim.config.outputs import check_run_outputs
        from inference_sim.config.resolve import resolve
        from inference_sim.config.unused import accept_reference_flags
        from inference_sim.report.progress import ProgressBar
        from inference_sim.runner import run_plan

        raw = _collect(params)
        if params.get("config"):
            raw["config"] = params["config"]  # --config FILE: flags given here win
        _warn_unread_defaults(raw)
        plan = resolve(accept_reference_flags(raw))
        results_path = plan.options["results_path"]
        to_stdout = results_path == "-"  # the results document is stdout's only content
        if to_stdout and output == "json":
            raise ConfigError(
                "--results-path - and --output json both claim stdout; give one of them"
            )
        if to_stdout:
            results_path = ""
        # Every output path, before the run: writable, and none of them an input.
        checked = {**plan.options, "results_path": results_path}
        check_run_outputs(checked, params.get("config"))
        for note in plan.notes:
            log.info(note)
        if plan.latency_fallback:
            log.warning("%s", fallback_warning(plan))
        log.info(
            "starting: model=%s GPU=%s TP=%s blocks=%d %s",
            plan.options["model"],
            plan.options["hardware"],
            plan.options["tp"],
            plan.engine.num_gpu_blocks,
            step_coefficients_text(plan),
        )
        start = time.perf_counter()
        # A progress bar for runs longer than a second, when stderr is a terminal
        # (--progress: always, --no-progress or --quiet: never).
        if not quiet and (progress or (progress is None and sys.stderr.isatty())):
            bar = ProgressBar(sys.stderr, min_seconds=0.0 if progress else 1.0)
        try:
            # Ctrl-C stops the simulation and keeps the results so far (runner.run_plan).
            results = run_plan(plan, progress=bar, signals=signals)
        finally:
            if bar is not None:
                bar.close()
        log.info("simulation wall-clock time: %.3fs", time.perf_counter() - start)
        if results_path:  # the file first: a closed stdout (`| head`) must not lose it
            try:
                results.write_json(results_path)  # atomic (or through a device): never half
            except OSError as exc:
                raise click.ClickException(f"--results-path {results_path}: {exc}") from None
            log.info("metrics written to %s", results_path)
            written = results_path
        if to_stdout:
            results.write_json("-")  # as simulate(results_path="-")
        elif output == "json":
            sys.stdout.write(json.dumps(results.summary_document(), indent=2) + "\n")
        else:
            sys.stdout.write(results.report())
        sys.stdout.flush()
        return results, results_path
    except (click.ClickException, BrokenPipeError):
        raise  # click reports these itself (a closed stdout: exit 1, no message)
    except KeyboardInterrupt as exc:
        code = exit_code_for(exc)
        what = signal_name(code - 128)
        if signals.running and written:  # a second signal after the file was written
            raise Interrupted(
                f"{what} twice; stopped at once, results written to {written}", code
            ) from None
        if signals.running:  # a second signal: stopped at once, the write abandoned
            raise Interrupted(f"{what} twice; stopped at once, no results written", code) from None
        raise Interrupted(f"{what}; no results written", code) from None
    except MemoryError:
        if debug:
            traceback.print_exc()
        raise click.ClickException(
            "simulation failed: out of memory; reduce --num-instances, --total-kv-blocks, "
            "--num-requests or the request lengths"
        ) from None
    except Exception as exc:
        if _is_bad_input(exc):
            if debug:
                traceback.print_exc()
            raise BadInput(str(exc)) from None
        if debug:  # a failure during the run, not bad input
            traceback.print_exc()
        raise click.ClickException(f"simulation failed: {type(exc).__name__}: {exc}") from None


def _is_bad_input(exc: BaseException) -> bool:
    from inference_sim.config.errors import ConfigError
    from inference_sim.workload import WorkloadError

    return isinstance(exc, ConfigError | WorkloadError)


def _replicate_options() -> list[click.Option]:
    from inference_sim.cli.replicated import replicate_options

    return replicate_options()


@click.group(
    "blis",
    cls=BlisGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(__version__, prog_name="blis (inference-sim)")
def cli() -> None:
    """inference-sim: discrete-event simulation of LLM inference serving."""


def _run(**params: Any) -> None:
    debug = bool(params.pop("debug"))
    quiet = bool(params.pop("quiet"))
    log_level = params.pop("log") or ("error" if quiet else "warn")
    progress = params.pop("progress")
    as_json, asked = params.pop("as_json"), params.pop("output", None)
    if as_json and asked not in (None, "json"):
        raise BadInput(f"--json conflicts with --output {asked}; give one of them")
    output = "json" if as_json else asked or "text"
    seeds, replicates, confidence = (params.pop(k) for k in ("seeds", "replicates", "confidence"))
    if seeds is not None or replicates is not None:
        _replicated(params, debug, log_level, seeds, replicates, confidence, output)
        return
    if confidence is not None:
        raise BadInput("--confidence needs --seeds or --replicates")
    run_command(
        params, debug=debug, log_level=log_level, progress=progress, quiet=quiet, output=output
    )


def _replicated(
    params: dict[str, Any],
    debug: bool,
    log_level: str,
    seeds: str | None,
    replicates: int | None,
    confidence: float | None,
    output: str = "text",
) -> None:
    """``--seeds``/``--replicates``: cli/replicated.py (bad input: one line, exit 2)."""
    from inference_sim.cli.replicated import run_replicated
    from inference_sim.config.errors import ConfigError
    from inference_sim.config.unused import accept_reference_flags
    from inference_sim.workload import WorkloadError

    _setup_logging(log_level)
    raw = _collect(params)
    if params.get("config"):
        raw["config"] = params["config"]
    _warn_unread_defaults(raw)
    try:
        raw = accept_reference_flags(raw)
        run_replicated(
            raw, seeds=seeds, replicates=replicates, confidence=confidence, output=output
        )
    except (ConfigError, WorkloadError) as exc:
        if debug:
            traceback.print_exc()
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt as exc:
        code = exit_code_for(exc)
        raise Interrupted(f"{signal_name(code - 128)}; no results written", code) from None


_run_params: list[click.Parameter] = [_click_option(spec) for spec in OPTIONS]
_run_params += _replicate_options()
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
    ("Prefill/decode disaggregation", frozenset({"pd"})),
    ("Autoscaling", frozenset({"autoscale"})),
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


@cli.command("help")
@click.argument("command", nargs=-1)
def help_command(command: tuple[str, ...]) -> None:
    """Show the help of blis or of a command (blis help run)."""
    # The reference's CLI framework (cobra) has this command: its scripts may call it.
    target: click.Command = cli
    names = ["blis"]
    for name in command:
        with click.Context(target, info_name=" ".join(names)) as ctx:
            sub = target.get_command(ctx, name) if isinstance(target, click.Group) else None
        if sub is None:
            raise BadInput(f"blis help: unknown command {' '.join(command)!r}; see blis --help")
        names.append(name)
        target = sub
    with click.Context(target, info_name=" ".join(names)) as ctx:
        click.echo(target.get_help(ctx))


@cli.command("models")
@click.option(
    "--defaults-filepath", default=None, help="Extra catalog to merge (defaults.yaml format)."
)
def models_command(defaults_filepath: str | None) -> None:
    """List the models, GPUs and TP degrees the catalog has coefficients for."""
    from inference_sim.catalog import CatalogError, format_models_table, load_catalog, models_table

    if not defaults_filepath:
        _setup_logging("warn")
        _warn_unread_defaults({})
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
    help="A Mooncake trace's hash-id block size (default 512); for other formats the KV "
    "block size of the cache hit rate (default 16).",
)
@click.option(
    "--kv-block-size",
    type=int,
    default=None,
    help="KV block size (tokens) of the unlimited prefix cache hit rate (default 16, as "
    "blis run --block-size-in-tokens).",
)
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
@click.option(
    "--format",
    "fmt",
    default="auto",
    help="auto (from the content), spec, csv, v2, azure, mooncake or lengths.",
)
@click.option("--seed", type=int, default=None, help="Seed for a spec (default: its own).")
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks for errors.")
def describe_command(
    file: str,
    block_size: int | None,
    kv_block_size: int | None,
    as_json: bool,
    fmt: str,
    seed: int | None,
    debug: bool,
) -> None:
    """Summarise a workload spec or trace: requests, duration, rate, lengths, and the
    prompt-token hit rate of a prefix cache with unlimited room."""
    from inference_sim.workload import WorkloadError
    from inference_sim.workload.describe import (
        describe_workload,
        description_json,
        format_description,
    )

    try:
        d = describe_workload(
            file, block_size=block_size, fmt=fmt, seed=seed, kv_block_size=kv_block_size
        )
    except WorkloadError as exc:
        if debug:
            traceback.print_exc()
        raise BadInput(str(exc)) from None
    except Exception as exc:  # a bug, not bad input: one line (--debug: the traceback)
        if debug:
            traceback.print_exc()
        raise click.ClickException(f"describe failed: {type(exc).__name__}: {exc}") from None
    click.echo(description_json(d) if as_json else format_description(d), nl=as_json)


def _add_tool_commands() -> None:
    """sweep, report, plot, plan, tune, calibrate: defined in their own packages."""
    from inference_sim.calibrate.cli import calibrate_command
    from inference_sim.config.cli import config_group
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
        config_group,
    ):
        cli.add_command(command)


_add_tool_commands()


#: Values of ``--flag=VALUE`` for an on/off option: Go's ``strconv.ParseBool`` (1, t, T,
#: TRUE, true, True and 0, f, F, FALSE, false, False; compared lower-cased), which the
#: reference's flags use, plus yes/no and on/off.
_TRUE, _FALSE = ("true", "t", "1", "yes", "on"), ("false", "f", "0", "no", "off")


def _on_off_flags() -> set[str]:
    """Every spelling of every on/off run option (``--roofline``, ``--exact-steps``...)."""
    from inference_sim.config.options import OPTIONS

    return {f for spec in OPTIONS if spec.kind is bool for f in (spec.flag, *spec.alias_flags)}


def _bool_values(args: list[str]) -> list[str]:
    """``--roofline=true`` / ``--roofline=f`` (the reference's Go flags take these) as
    click's ``--roofline`` / ``--no-roofline``, for every on/off run option. Other
    values are left as given (:func:`_check_bool_values` refuses them first)."""
    flags = _on_off_flags()
    out = []
    for arg in args:
        if arg == "--":
            out.extend(args[len(out) :])
            break
        name, eq, value = arg.partition("=")
        if eq and name in flags and value.strip().lower() in _TRUE + _FALSE:
            arg = name if value.strip().lower() in _TRUE else f"--no-{name[2:]}"
        out.append(arg)
    return out


def _check_bool_values(args: list[str]) -> None:
    """:class:`UsageLine` for ``--roofline=maybe``: click would say the flag "does not
    take a value", which is wrong for a flag the reference takes ``=false`` for."""
    flags = _on_off_flags()
    for arg in args:
        if arg == "--":
            return
        name, eq, value = arg.partition("=")
        if eq and name in flags and value.strip().lower() not in _TRUE + _FALSE:
            raise UsageLine(
                f"{name}: {value!r} is not a valid boolean (true/false)", _command_path(args)
            )


def _command_path(args: list[str]) -> str:
    """``blis run`` for ``["run", "--roofline=x"]``: the command the arguments name."""
    target: click.Command = cli
    path = ["blis"]
    for arg in args:
        if arg.startswith("-") or not isinstance(target, click.Group):
            break
        sub = target.commands.get(arg)
        if sub is None:
            break
        target, path = sub, [*path, arg]
    return " ".join(path)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``timeout``, ``kill``, container runtimes) handled as Ctrl-C by every
    command: a KeyboardInterrupt, so a sweep's or a plan's worker processes are stopped by
    its clean-up and the command exits 143 with one line, instead of dying at once and
    leaving its workers to run on. ``blis run`` installs its own handlers inside this. A
    SIGTERM ignored when the command started stays ignored; off the main thread (an
    in-process call from a thread) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise Abandoned(signum)

    signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> None:
    """Run ``blis``. As click's own standalone mode, except that a Ctrl-C (or SIGTERM)
    outside a command's own handling exits 130 (143) with one line, not "Aborted!" and 1.
    ``--flag=true`` and one-line usage errors are :class:`BlisGroup`'s."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with _sigterm_as_interrupt():
            code = cli.main(args=args, prog_name="blis", standalone_mode=False)
    except click.exceptions.Abort as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            code = exit_code_for(cause)
            click.echo(f"Error: {signal_name(code - 128)}", err=True)
            sys.exit(code)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
