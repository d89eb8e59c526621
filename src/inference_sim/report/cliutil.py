"""Shared pieces of the ``blis sweep/report/plot/plan/tune`` commands.

Kept apart from ``inference_sim.cli.main`` so those commands can be imported on their
own; ``main`` registers them.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import click

from inference_sim.config.options import OPTIONS, OptionSpec


class BadInput(click.ClickException):
    """Bad input or a missing extra: one line on stderr and exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


@contextlib.contextmanager
def cli_errors(debug: bool = False) -> Iterator[None]:
    """Turn bad input (ConfigError, WorkloadError, MissingExtra, ...) into exit 2."""
    from inference_sim.config.errors import ConfigError
    from inference_sim.core.extras import MissingExtra
    from inference_sim.workload import WorkloadError

    try:
        yield
    except click.ClickException:
        raise
    except (ConfigError, WorkloadError, MissingExtra, FileNotFoundError, IsADirectoryError) as exc:
        if debug:
            traceback.print_exc()
        raise BadInput(str(exc)) from None
    except ValueError as exc:
        if debug:
            traceback.print_exc()
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def run_option(spec: OptionSpec) -> click.Option:
    """The ``blis run`` flag for ``spec`` (no default: only given flags are collected)."""
    names = [spec.flag, *spec.alias_flags]
    help_text = spec.help + ("" if spec.default in ("", None) else f" [default: {spec.default}]")
    if spec.kind is bool:
        decls = [f"{n}/--no-{n[2:]}" for n in names]
        return click.Option([*decls, spec.name], default=None, help=help_text)
    if spec.kind == "floats":
        return click.Option(
            [*names, spec.name], type=str, multiple=True, default=None, help=help_text
        )
    ctype = {int: click.INT, float: click.FLOAT, str: click.STRING}[spec.kind]  # type: ignore[index]
    return click.Option([*names, spec.name], type=ctype, default=None, help=help_text)


def run_options(exclude: Sequence[str] = ()) -> list[click.Option]:
    """Flags for every run option except ``exclude`` (canonical names)."""
    return [run_option(spec) for spec in OPTIONS if spec.name not in exclude]


def collect_run_options(params: dict[str, Any], exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The run options given on the command line (canonical names), ``config`` included."""
    given: dict[str, Any] = {}
    for spec in OPTIONS:
        if spec.name in exclude:
            continue
        value = params.get(spec.name)
        if value is None or (spec.kind == "floats" and not value):
            continue
        given[spec.name] = ",".join(value) if spec.kind == "floats" else value
    if params.get("config"):
        given["config"] = params["config"]
    return given


def base_from_config(given: dict[str, Any]) -> dict[str, Any]:
    """Expand ``config`` (a run-config file) into options; the command line wins."""
    from inference_sim.config.resolve import merge_config_file

    return merge_config_file(given)


def parse_assignments(values: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """``NAME=VALUE`` pairs of run options (YAML scalars: 3, 2.5, true, text)."""
    import yaml

    from inference_sim.config.errors import ConfigError
    from inference_sim.config.options import canonical_name

    out: dict[str, Any] = {}
    for text in values:
        name, sep, raw = text.partition("=")
        canon = canonical_name(name.strip())
        if not sep or canon is None:
            raise ConfigError(f"{flag} {text!r}: expected RUN_OPTION=VALUE")
        try:
            out[canon] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[canon] = raw
    return out


def echo_err(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(message, err=True)


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
