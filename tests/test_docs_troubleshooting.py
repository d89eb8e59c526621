"""docs/troubleshooting.md names real flags and the limits the code enforces (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from inference_sim.cli.main import cli
from inference_sim.core import inputs as _inputs
from inference_sim.workload import _rows
from inference_sim.workload.samplers import MAX_REQUEST_TOKENS
from inference_sim.workload.trace_v2 import MAX_HEADER_BYTES

DOCS = Path(__file__).resolve().parents[1] / "docs"
TEXT = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
NOT_FLAGS = {"--bogus"}  # the doc's example of an unknown flag


def _flags(command: click.Command) -> set[str]:
    out: set[str] = {"--help"}
    for param in command.params:
        out.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            out |= _flags(sub)
    return out


def test_every_flag_named_exists():
    text = re.sub(r"\]\([^)]*\)", "]", TEXT)  # link targets are not flags
    named = set(re.findall(r"--[a-z][a-z0-9-]*[a-z0-9]", text)) - NOT_FLAGS
    unknown = sorted(named - _flags(cli))
    assert not unknown, f"docs/troubleshooting.md names flags no command has: {unknown}"


def test_the_documented_limits_are_the_enforced_ones():
    for doc in (TEXT, (DOCS / "workloads.md").read_text(encoding="utf-8")):
        assert f"{_rows.MAX_ROW_CHARS:,} characters" in doc
        assert f"{_rows.MAX_ROW_COLUMNS:,}" in doc
        assert f"{MAX_REQUEST_TOKENS:,}" in doc or str(MAX_REQUEST_TOKENS) in doc
    assert f"{MAX_HEADER_BYTES:,} bytes" in TEXT


def test_the_documented_input_limits_are_the_enforced_ones():
    """Issue 21: the "Limits: input size and cost" section names the constants in force."""
    import importlib

    from inference_sim.metrics.timeseries import MAX_TABLE_ROWS
    from inference_sim.workload.spec import MAX_CLIENTS

    resolve = importlib.import_module("inference_sim.config.resolve")
    section = TEXT.split("## Limits: input size and cost", 1)[1].split("\n## ", 1)[0]
    for value in (
        _inputs.MAX_CONFIG_BYTES,
        _inputs.MAX_RESULTS_BYTES,
        _inputs.MAX_YAML_NODES,
        MAX_CLIENTS,
        resolve.MAX_INSTANCES,
        resolve.MAX_BLOCK_SIZE,
        MAX_TABLE_ROWS,
    ):
        assert f"{value:,}" in section, value
    assert f"{_inputs.MAX_YAML_DEPTH} levels" in section
