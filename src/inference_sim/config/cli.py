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
    from inference_sim.core.outfiles import OutputFile
    from inference_sim.report.cliutil import check_output, cli_errors

    with cli_errors():  # a folder, a missing folder: one line, exit 2 (bad input)
        check_output("--output", output)
        try:
            with OutputFile(output) as fh:  # atomic, or through a device/FIFO
                fh.write(text)
        except OSError as exc:
            raise ValueError(f"--output {output}: {exc.strerror or exc}") from None
