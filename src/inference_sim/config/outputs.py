"""The run's output paths, checked before the run starts (issue 21, items 1-3).

A run that cannot write its results should fail in a second with one line, not after an
hour of simulation; and an output that names one of the run's own inputs (the workload
spec, the trace, the config file, ...) would destroy that input, so it is refused.
The writing rules themselves are in :mod:`inference_sim.core.outfiles`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from inference_sim.config.errors import ConfigError
from inference_sim.core.outfiles import OutputPathError, check_output_file, refuse_overlaps

#: Run options that name files the run reads, with their flags.
INPUT_OPTIONS = (
    ("workload_spec", "--workload-spec"),
    ("workload_traces_filepath", "--workload-traces-filepath"),
    ("policy_config", "--policy-config"),
    ("defaults_filepath", "--defaults-filepath"),
    ("hardware_config", "--hardware-config"),
    ("latency_coeffs", "--latency-coeffs"),
)


def run_outputs(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(flag, path)`` of every file the run will write."""
    out: list[tuple[str, str]] = []
    if options.get("results_path"):
        out.append(("--results-path", str(options["results_path"])))
    if options.get("trace_output") and options.get("trace_level") == "decisions":
        out.append(("--trace-output", str(options["trace_output"])))
    if options.get("export_trace"):
        from inference_sim.workload.trace_v2 import trace_v2_paths

        header, data = trace_v2_paths(str(options["export_trace"]))
        out += [("--export-trace", data), ("--export-trace", header)]
    return out


def run_inputs(options: Mapping[str, Any], config: str | None = None) -> list[tuple[str, str]]:
    """``(flag, path)`` of every file the run reads."""
    ins = [(flag, str(options[name])) for name, flag in INPUT_OPTIONS if options.get(name)]
    trace = options.get("workload_traces_filepath")
    if trace:  # a trace v2 input is a pair: its header counts too
        from inference_sim.workload.trace_v2 import trace_v2_paths

        ins += [("--workload-traces-filepath", p) for p in trace_v2_paths(str(trace))]
    folder = options.get("model_config_folder")
    if folder:
        for name in ("config.json", "generation_config.json"):
            ins.append(("--model-config-folder", os.path.join(str(folder), name)))
    if config:
        ins.append(("--config", str(config)))
    return ins


def check_run_outputs(options: Mapping[str, Any], config: str | None = None) -> None:
    """ConfigError (one line) when an output path cannot be written or would replace an
    input or another output. Called after the options are resolved, before the run."""
    outputs = run_outputs(options)
    for flag, path in outputs:
        try:
            check_output_file(path)
        except OutputPathError as exc:
            raise ConfigError(f"{flag} {path}: cannot write: {exc}") from None
    try:
        refuse_overlaps(outputs, run_inputs(options, config))
    except OutputPathError as exc:
        raise ConfigError(str(exc)) from None
