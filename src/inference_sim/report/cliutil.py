"""Shared pieces of the ``blis sweep/report/plot/plan/tune`` commands.

Kept apart from ``inference_sim.cli.main`` so those commands can be imported on their
own; ``main`` registers them.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import click

from inference_sim.config.numbers import INTEGER
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


#: Shown instead of a default that is only a placeholder for "decided at resolution".
_DEFAULT_TEXT = {
    "alpha_coeffs": "the trained entry's",
    "beta_coeffs": "the trained entry's",
}


def help_default(spec: OptionSpec) -> str:
    """`` [default: X]`` for ``spec``'s help, or ``""`` when the help already says it.

    Placeholders (``tp`` 0 meaning "the catalog's", the horizon's "never") would read as
    real values, so options whose help names their default show nothing more.
    """
    if spec.name in _DEFAULT_TEXT:
        return f" [default: {_DEFAULT_TEXT[spec.name]}]"
    if spec.name.startswith(("prompt_tokens", "output_tokens", "prefix_tokens")):
        return f" [default: {spec.default}, or the --workload preset's]"
    if spec.default in ("", None, []) or "default:" in spec.help or "(default" in spec.help:
        return ""
    if spec.kind is bool:
        return " [default: on]" if spec.default else " [default: off]"
    return f" [default: {spec.default}]"


def check_output(flag: str, path: str, *, folder: bool = False) -> None:
    """ValueError (exit 2 through :func:`cli_errors`) when ``path`` cannot be written as a
    file (``folder``: made and written as a folder); called before any work is done."""
    from inference_sim.core.outfiles import OutputPathError, check_output_file, check_output_folder

    try:
        (check_output_folder if folder else check_output_file)(path)
    except OutputPathError as exc:
        raise ValueError(f"{flag} {path}: cannot write: {exc}") from None


def run_option(spec: OptionSpec) -> click.Option:
    """The ``blis run`` flag for ``spec`` (no default: only given flags are collected)."""
    names = [spec.flag, *spec.alias_flags]
    help_text = spec.help + help_default(spec)
    if spec.kind is bool:
        decls = [f"{n}/--no-{n[2:]}" for n in names]
        return click.Option([*decls, spec.name], default=None, help=help_text)
    if spec.kind in ("floats", "texts"):
        return click.Option(
            [*names, spec.name], type=str, multiple=True, default=None, help=help_text
        )
    ctype = {int: INTEGER, float: click.FLOAT, str: click.STRING}[spec.kind]  # type: ignore[index]
    if spec.name == "horizon":
        ctype = click.STRING  # units: 500ms, 10s (parsed by config.resolve)
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
        if value is None or (spec.kind in ("floats", "texts") and not value):
            continue
        given[spec.name] = ",".join(value) if spec.kind in ("floats", "texts") else value
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
    from inference_sim.config.options import ALIASES, BY_NAME, canonical_name
    from inference_sim.config.resolve import coerce_option
    from inference_sim.core.suggest import did_you_mean

    out: dict[str, Any] = {}
    for text in values:
        name, sep, raw = text.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{flag} {text!r}: expected RUN_OPTION=VALUE")
        canon = canonical_name(name.strip())
        if canon is None:
            key = name.strip().lstrip("-").replace("-", "_")
            raise ConfigError(
                f"{flag} {text!r}: unknown run option {name.strip()!r}"
                f"{did_you_mean(key, [*BY_NAME, *ALIASES])}; see `blis run --help` for the list"
            )
        try:
            out[canon] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[canon] = raw
        try:  # checked now, with the option's own message (the runs convert it again)
            coerce_option(BY_NAME[canon], out[canon])
        except ConfigError as exc:
            raise ConfigError(f"{flag} {text!r}: {exc}") from None
    return out


def echo_err(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(message, err=True)
