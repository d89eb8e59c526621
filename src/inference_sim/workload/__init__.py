"""Workload sources: specs, generators, trace replay and export.

* the legacy distribution generator (``--workload distribution`` and presets);
* the workload-spec YAML (:func:`load_workload_spec`, :func:`iter_spec_requests`):
  clients, arrival processes, length laws, prefix groups, sessions, multimodal, lifecycle
  windows, staged load, inference-perf and ServeGen expansions;
* traces in: the reference's CSV (:func:`read_csv_trace`), trace v2
  (:func:`iter_trace_v2`), Azure (:func:`iter_azure_trace`), Mooncake
  (:func:`iter_mooncake_trace`), or any of them via :func:`open_trace`;
* traces out: :func:`write_csv_trace`, :func:`export_trace_v2`;
* :func:`describe_workload` (``blis workload describe``).

Generators and replays yield requests lazily in arrival order with integer-µs arrival
times; every input problem surfaces as a one-line :class:`WorkloadError` naming the flag,
field or trace location.
"""

from inference_sim.workload.describe import describe_workload
from inference_sim.workload.distribution import (
    MAX_TOKEN_ID,
    DistributionParams,
    LengthDistribution,
    generate_distribution,
    inter_arrival_ticks,
    iter_distribution,
    round_half_away_from_zero,
    validate_distribution,
    validate_length,
    validate_rate,
)
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.formats import TRACE_FORMATS, detect_format, open_trace
from inference_sim.workload.generate import generate_spec_requests, iter_spec_requests
from inference_sim.workload.realtraces import iter_azure_trace, iter_mooncake_trace
from inference_sim.workload.spec import WorkloadSpec, load_workload_spec, parse_workload_spec
from inference_sim.workload.trace_v2 import (
    TraceV2Header,
    TraceV2Writer,
    export_trace_v2,
    iter_trace_v2,
)
from inference_sim.workload.traces import read_csv_trace, seconds_text, write_csv_trace

__all__ = [
    "MAX_TOKEN_ID",
    "TRACE_FORMATS",
    "DistributionParams",
    "LengthDistribution",
    "TraceV2Header",
    "TraceV2Writer",
    "WorkloadError",
    "WorkloadSpec",
    "describe_workload",
    "detect_format",
    "export_trace_v2",
    "generate_distribution",
    "generate_spec_requests",
    "inter_arrival_ticks",
    "iter_azure_trace",
    "iter_distribution",
    "iter_mooncake_trace",
    "iter_spec_requests",
    "iter_trace_v2",
    "load_workload_spec",
    "open_trace",
    "parse_workload_spec",
    "read_csv_trace",
    "round_half_away_from_zero",
    "seconds_text",
    "validate_distribution",
    "validate_length",
    "validate_rate",
    "write_csv_trace",
]
