"""Arrival processes of ``--arrival`` for the distribution workload and its presets.

``constant`` is the reference's evenly spaced stream (request ``k`` at ``k * gap`` µs,
see :func:`inference_sim.workload.distribution.inter_arrival_ticks`), kept as the
default of ``blis run`` so old scripts keep their numbers. ``poisson`` and ``gamma`` are
the processes of vLLM's benchmark: independent gaps with mean ``1 / rate``, exponential
for Poisson and gamma-distributed with shape ``burstiness`` for gamma (shape 1 is
Poisson; below 1 burstier, above 1 more regular). Evenly spaced arrivals never queue
behind a burst, so they understate queueing delay; capacity planning uses Poisson.

The first request arrives at t = 0 whatever the process, so a run's duration is the sum
of ``count - 1`` gaps. Gaps come from their own random stream (``arrival``), so changing
the process moves the arrival times and leaves every request's lengths and tokens alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from inference_sim.workload.errors import WorkloadError

ARRIVAL_PROCESSES = ("constant", "poisson", "gamma")
"""Accepted ``--arrival`` values."""

_CHUNK = 1 << 16  # gaps drawn per call while looking for the horizon


def check_arrival(process: str, burstiness: float) -> None:
    """WorkloadError naming the flag unless ``process`` and ``burstiness`` make sense."""
    if process not in ARRIVAL_PROCESSES:
        raise WorkloadError(
            f"--arrival: unknown process {process!r}; valid: {', '.join(ARRIVAL_PROCESSES)}"
        )
    if not (math.isfinite(burstiness) and burstiness > 0):
        raise WorkloadError(f"--burstiness must be a finite number > 0, got {burstiness}")
    if process != "gamma" and burstiness != 1.0:
        raise WorkloadError(
            f"--burstiness {burstiness:g} needs --arrival gamma (got --arrival {process}); "
            "burstiness 1 is Poisson"
        )


def random_arrival_times(
    process: str,
    rate: float,
    burstiness: float,
    *,
    num_requests: int,
    horizon: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Arrival times (int64 µs) of a Poisson or gamma process at ``rate`` requests/s.

    At most ``num_requests`` times, all below ``horizon``; the first is 0 and time ``k``
    is the floor of the sum of the first ``k`` gaps (drawn in float64 seconds x 1e6).
    """
    if process not in ("poisson", "gamma"):
        raise WorkloadError(f"--arrival: {process!r} is not a random process")
    if num_requests <= 0 or horizon <= 0:
        return np.zeros(0, dtype=np.int64)
    mean_gap_us = 1e6 / rate
    shape = burstiness if process == "gamma" else 1.0
    parts: list[np.ndarray] = []
    now = 0.0
    have = 0
    first = True
    while have < num_requests:
        n = min(_CHUNK, num_requests - have)
        if process == "poisson":
            gaps = rng.standard_exponential(n)
        else:
            gaps = rng.standard_gamma(shape, n) / shape
        gaps *= mean_gap_us
        if first:  # the first request arrives at 0: its "gap" is not used
            gaps[0] = 0.0
            first = False
        times = now + np.cumsum(gaps)
        now = float(times[-1])
        inside = times < horizon
        if not inside.all():
            parts.append(times[inside])
            have += int(inside.sum())
            break
        parts.append(times)
        have += n
    out = np.concatenate(parts) if parts else np.zeros(0)
    return np.floor(out).astype(np.int64)


def iter_arrival_times(
    process: str, rate: float, burstiness: float, rng: np.random.Generator
) -> Iterator[int]:
    """An endless stream of arrival times (µs) of ``process`` at ``rate``; the first is 0.

    ``constant`` gives ``k * trunc(1 / (rate / 1e6))`` as the distribution workload does; the
    random processes give the times of :func:`random_arrival_times`, drawn a chunk at a
    time. Used for traces that have lengths but no times.
    """
    check_arrival(process, burstiness)
    if process == "constant":
        from inference_sim.workload.distribution import inter_arrival_ticks

        gap = inter_arrival_ticks(rate)
        if gap is None:
            return iter((0,))
        return (k * gap for k in itertools.count())
    return _random_stream(process, rate, burstiness, rng)


def _random_stream(
    process: str, rate: float, burstiness: float, rng: np.random.Generator
) -> Iterator[int]:
    mean_gap_us = 1e6 / rate
    shape = burstiness if process == "gamma" else 1.0
    now = 0.0
    first = True
    while True:
        if process == "poisson":
            gaps = rng.standard_exponential(_CHUNK)
        else:
            gaps = rng.standard_gamma(shape, _CHUNK) / shape
        gaps *= mean_gap_us
        if first:
            gaps[0] = 0.0
            first = False
        times = now + np.cumsum(gaps)
        now = float(times[-1])
        for t in np.floor(times).tolist():
            if t >= 2**63:  # past any horizon
                return
            yield int(t)
