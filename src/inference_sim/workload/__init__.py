"""Workload sources: the legacy distribution generator and CSV trace replay/export.

Both produce ``list[Request]`` in generation order with integer-µs arrival times; every
input problem surfaces as a one-line :class:`WorkloadError` naming the flag or trace cell.
"""

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
from inference_sim.workload.traces import read_csv_trace, seconds_text, write_csv_trace

__all__ = [
    "MAX_TOKEN_ID",
    "DistributionParams",
    "LengthDistribution",
    "WorkloadError",
    "generate_distribution",
    "inter_arrival_ticks",
    "iter_distribution",
    "read_csv_trace",
    "round_half_away_from_zero",
    "seconds_text",
    "validate_distribution",
    "validate_length",
    "validate_rate",
    "write_csv_trace",
]
