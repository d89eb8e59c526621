"""Parallel sweeps: many runs from one YAML file, one table of results.

``blis sweep SWEEP.yaml --out DIR`` (or :func:`run_sweep`) expands the file's base,
grid and cases into runs, skips those already finished in ``DIR``, runs the rest on a
backend (local processes by default, or Ray) and writes ``DIR/results.parquet`` and
``DIR/results.duckdb``. See docs/sweeps.md.
"""

from __future__ import annotations

from inference_sim.sweep.backends import LocalBackend, RayBackend, execute_run, make_backend
from inference_sim.sweep.run import SweepOutcome, run_sweep, table_rows
from inference_sim.sweep.spec import RunSpec, SweepSpec, load_sweep, parse_sweep, run_key

__all__ = [
    "LocalBackend",
    "RayBackend",
    "RunSpec",
    "SweepOutcome",
    "SweepSpec",
    "execute_run",
    "load_sweep",
    "make_backend",
    "parse_sweep",
    "run_key",
    "run_sweep",
    "table_rows",
]
