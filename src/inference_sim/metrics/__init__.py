"""Per-request records, aggregation, percentiles and the results schema."""

from inference_sim.metrics.stats import TickHistogram, mean_ms, percentile_ms
from inference_sim.metrics.summary import build_records, build_summary, request_record

__all__ = [
    "TickHistogram",
    "build_records",
    "build_summary",
    "mean_ms",
    "percentile_ms",
    "request_record",
]
