"""``blis config``: the run-configuration model as JSON Schema (``blis config schema``)."""

from __future__ import annotations

import json

import click


@click.group("config")
def config_group() -> None:
    """The typed run configuration (SimConfig) shared by the CLI, simulate() and sweeps."""


@config_group.command("schema")
@click.option(
    "-o", "--output", default=None, help="Write the schema to this file instead of stdout."
)
def schema_command(output: str | None) -> None:
    """Print the JSON Schema of a run-config YAML file (`blis run --config FILE`).

    Point your editor's YAML language server at it to validate and complete run configs,
    e.g. a first line `# yaml-language-server: $schema=run-config.schema.json`.
    """
    from inference_sim.config.model import config_schema

    text = json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    from inference_sim.core.outfiles import OutputFile, OutputPathError, check_output_file

    try:  # a folder, a missing folder: bad input, one line and exit 2
        check_output_file(output)
        with OutputFile(output) as fh:  # atomic, or through a device/FIFO
            fh.write(text)
    except OutputPathError as exc:
        raise _BadOutput(f"--output {output}: cannot write: {exc}") from None
    except OSError as exc:
        raise _BadOutput(f"--output {output}: {exc.strerror or exc}") from None


class _BadOutput(click.ClickException):
    """An output path that cannot be written: bad input (exit 2), as for every command."""

    exit_code = 2
