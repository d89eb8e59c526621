"""Time series, progress display, HTML report and plots of a run's results.

The package imports nothing heavy at import time: matplotlib and pandas are loaded
only by the functions that need them (see :mod:`inference_sim.core.extras`).
"""

from __future__ import annotations

from inference_sim.core.extras import MissingExtra
from inference_sim.metrics.timeseries import TIMESERIES_COLUMNS, TimeseriesSampler

__all__ = ["TIMESERIES_COLUMNS", "MissingExtra", "TimeseriesSampler"]
