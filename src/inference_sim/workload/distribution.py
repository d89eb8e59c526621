"""Legacy ``--workload distribution`` generator: evenly spaced requests of random lengths.

Behaviour kept from the reference (DECISIONS Q17): arrivals are spaced by a constant
``trunc(1 / (rate / 1e6))`` microseconds starting at 0, not by a Poisson process (unless
``--arrival poisson|gamma`` asks for one, see :mod:`inference_sim.workload.arrivals`); prompt
and output lengths are clamped normal draws; all prompts share one random prefix.

What we change on purpose: the random numbers come from numpy (the reference's Go source
is not ported, so draws differ one by one but not in distribution), and validation only
asks for the mean to lie in ``[min, max]`` and the stdev to be non-negative (DECISIONS Q18),
because a stdev wider than the range is a perfectly sensible request.

Speed matters (a million requests is a normal run), so lengths are drawn as numpy arrays
and token ids in large bulk ``rng.integers`` calls that are then sliced as Python lists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from inference_sim.core.request import Request
from inference_sim.workload._gc import gc_paused
from inference_sim.workload.arrivals import check_arrival, random_arrival_times
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.samplers import check_length_bound

MAX_TOKEN_ID = 128000
"""Token ids are uniform integers in ``[0, MAX_TOKEN_ID)`` (a Llama-3-sized vocabulary)."""

TICKS_PER_SECOND = 1_000_000
"""Simulation time unit is the microsecond."""

_TOKEN_CHUNK = 1 << 22
"""Upper bound of token ids drawn per bulk call (about 32 MiB of int64).

Bounds peak numpy memory on huge workloads. numpy's bounded-integer draws continue the
same stream across calls, so the chunking does not change which ids are produced.
"""


_LENGTH_BLOCK = 1 << 16
"""Requests whose lengths are drawn together (numpy's normal draws continue the same
stream across calls, so the blocking does not change the lengths)."""


@dataclass(frozen=True, slots=True)
class LengthDistribution:
    """A token-length law: normal(mean, stdev) clamped to ``[min, max]``, then rounded."""

    mean: int
    stdev: int
    min: int
    max: int


@dataclass(frozen=True, slots=True)
class DistributionParams:
    """Everything the generator needs besides rate, count, horizon and the RNG."""

    prefix_tokens: int
    prompt: LengthDistribution
    output: LengthDistribution


def validate_length(dist: LengthDistribution, *, flag: str, lowest_min: int) -> None:
    """Check one length law; ``flag`` is the CLI stem (``prompt-tokens`` / ``output-tokens``).

    ``lowest_min`` is 1 for prompts (the engine needs at least one prompt token to produce
    a first token) and 0 for outputs (a zero-length output is legal).
    """
    why = " (a request needs at least one prompt token)" if lowest_min > 0 else ""
    if dist.min < lowest_min:
        raise WorkloadError(f"--{flag}-min must be >= {lowest_min}{why}, got {dist.min}")
    if dist.min > dist.max:
        raise WorkloadError(
            f"--{flag}-min must be <= --{flag}-max, got min {dist.min} > max {dist.max}"
        )
    if not dist.min <= dist.mean <= dist.max:
        raise WorkloadError(
            f"--{flag} must lie in [--{flag}-min, --{flag}-max] = "
            f"[{dist.min}, {dist.max}], got {dist.mean}"
        )
    if dist.stdev < 0:
        raise WorkloadError(f"--{flag}-stdev must be >= 0, got {dist.stdev}")
    check_length_bound(dist.max, f"--{flag}-max")


def validate_distribution(params: DistributionParams) -> None:
    """Reject parameters that would produce nonsense lengths, naming the CLI flag at fault."""
    if params.prefix_tokens < 0:
        raise WorkloadError(f"--prefix-tokens must be >= 0, got {params.prefix_tokens}")
    check_length_bound(params.prefix_tokens, "--prefix-tokens")
    validate_length(params.prompt, flag="prompt-tokens", lowest_min=1)
    validate_length(params.output, flag="output-tokens", lowest_min=0)


def validate_rate(rate: float) -> float:
    """Return ``rate`` as a float if it is finite and > 0, else raise naming ``--rate``."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise WorkloadError(f"--rate must be a finite number > 0, got {rate!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise WorkloadError(f"--rate must be a finite number > 0, got {rate}")
    return value


def inter_arrival_ticks(rate: float) -> int | None:
    """Constant spacing in µs for ``rate`` req/s, or ``None`` if it exceeds any int range.

    Computed as ``trunc(1 / (rate / 1e6))`` in float64, exactly like the reference, which is
    why 10 req/s gives 99999 µs and not 100000 (``1e6 / rate`` would round differently).
    A rate above 1e6 req/s truncates to 0: every request arrives at t = 0.
    """
    per_tick = validate_rate(rate) / TICKS_PER_SECOND
    if per_tick == 0.0:  # subnormal rate underflowed: only the first request can arrive
        return None
    gap = 1.0 / per_tick
    if not math.isfinite(gap):
        return None
    return int(gap)


def round_half_away_from_zero(x: float) -> int:
    """Round to the nearest integer, ties away from zero (2.5 -> 3, -2.5 -> -3).

    Python's ``round`` rounds ties to even, which would bias lengths downward at every .5;
    the reference rounds ties away from zero. ``floor(x + 0.5)`` is also wrong for values
    just below .5 (0.49999999999999994 + 0.5 rounds up to 1.0 in float64), hence the
    explicit fractional-part test.
    """
    a = abs(x)
    f = math.floor(a)
    r = f + 1 if a - f >= 0.5 else f
    return -r if x < 0 else r


def _round_half_away_array(x: np.ndarray) -> np.ndarray:
    """Vectorised :func:`round_half_away_from_zero`, returning int64."""
    a = np.abs(x)
    f = np.floor(a)
    r: np.ndarray = np.copysign(np.where(a - f >= 0.5, f + 1.0, f), x)
    return r.astype(np.int64)


def _lengths(dist: LengthDistribution, normals: np.ndarray | None, count: int) -> np.ndarray:
    """Lengths from standard-normal draws; a degenerate range (min == max) needs none."""
    if normals is None:
        return np.full(count, dist.min, dtype=np.int64)
    v = normals * float(dist.stdev) + float(dist.mean)
    return _round_half_away_array(np.clip(v, float(dist.min), float(dist.max)))


def _arrival_count(num_requests: int, horizon: int, gap: int | None) -> int:
    """How many requests fit: arrival ``k * gap`` must be < horizon and k < num_requests."""
    if horizon <= 0 or num_requests == 0:
        return 0
    if gap is None:
        return 1
    if gap == 0:
        return num_requests
    return min(num_requests, -(-horizon // gap))


def generate_distribution(
    params: DistributionParams,
    *,
    rate: float,
    num_requests: int,
    horizon: int,
    rng: np.random.Generator,
    arrival: str = "constant",
    burstiness: float = 1.0,
    arrival_rng: np.random.Generator | None = None,
) -> list[Request]:
    """The whole distribution workload as a list (see :func:`iter_distribution`)."""
    return list(
        iter_distribution(
            params,
            rate=rate,
            num_requests=num_requests,
            horizon=horizon,
            rng=rng,
            arrival=arrival,
            burstiness=burstiness,
            arrival_rng=arrival_rng,
        )
    )


def iter_distribution(
    params: DistributionParams,
    *,
    rate: float,
    num_requests: int,
    horizon: int,
    rng: np.random.Generator,
    arrival: str = "constant",
    burstiness: float = 1.0,
    arrival_rng: np.random.Generator | None = None,
) -> Iterator[Request]:
    """Stream the legacy distribution workload; deterministic for a given ``rng`` state.

    Inputs are validated before this returns; requests are then built a chunk at a time
    as the consumer pulls them, so memory stays bounded whatever ``num_requests`` is.

    Request ``k`` arrives at ``k * gap`` µs (see :func:`inter_arrival_ticks`) with
    ``arrival="constant"``; with ``poisson`` or ``gamma`` the times come from
    :func:`inference_sim.workload.arrivals.random_arrival_times`, drawn from
    ``arrival_rng`` (default: ``rng``, before anything else), so the lengths and tokens
    are those of the constant stream when ``arrival_rng`` is a separate stream. Generation
    stops after ``num_requests`` requests or at the first arrival ``>= horizon``. Every
    prompt starts with the same ``prefix_tokens`` random ids (drawn once), followed by its
    own random ids; outputs are random ids too, since they only feed the prefix cache.

    RNG consumption order: shared prefix ids, then one (prompt, output) pair of standard
    normals per request (skipping a law whose min == max), then token ids request by
    request (prompt before output) in bulk calls.
    """
    gap = inter_arrival_ticks(rate)  # the rate is checked before the ranges, as in the CLI
    validate_distribution(params)
    if num_requests < 0:
        raise WorkloadError(f"--num-requests must be >= 0, got {num_requests}")
    check_arrival(arrival, burstiness)
    times = None
    if arrival != "constant":
        times = random_arrival_times(
            arrival,
            float(rate),
            float(burstiness),
            num_requests=int(num_requests),
            horizon=int(horizon),
            rng=arrival_rng if arrival_rng is not None else rng,
        )
    return _stream(params, gap, int(num_requests), int(horizon), rng, times)


def _stream(
    params: DistributionParams,
    gap: int | None,
    num_requests: int,
    horizon: int,
    rng: np.random.Generator,
    times: np.ndarray | None = None,
) -> Iterator[Request]:
    prefix_arr = rng.integers(0, MAX_TOKEN_ID, size=params.prefix_tokens).astype(np.int32)
    n_prefix = params.prefix_tokens
    count = _arrival_count(num_requests, horizon, gap) if times is None else len(times)
    if count == 0:
        return

    prompt_draw = params.prompt.min != params.prompt.max
    output_draw = params.output.min != params.output.max
    ncols = int(prompt_draw) + int(output_draw)
    # The normals of all requests come before the token ids in the stream. They are drawn
    # a block at a time from a copy of the generator, after the generator itself has been
    # advanced past them (drawn and dropped in blocks): the same numbers as one bulk call,
    # with memory that follows the requests taken, not --num-requests.
    normal_rng: np.random.Generator | None = None
    if ncols:
        normal_rng = _copy(rng)
        left = count * ncols
        while left:
            rng.standard_normal(size=min(left, _LENGTH_BLOCK * ncols))
            left -= min(left, _LENGTH_BLOCK * ncols)

    # Read-only, shared by every request: lets a trace v2 export keep the shared prefix.
    meta = {"prefix_group": "prefix", "prefix_length": n_prefix} if n_prefix else None
    step = gap or 0
    for block_start in range(0, count, _LENGTH_BLOCK):
        n = min(_LENGTH_BLOCK, count - block_start)
        normals = normal_rng.standard_normal(size=(n, ncols)) if normal_rng is not None else None
        p_norm = normals[:, 0] if normals is not None and prompt_draw else None
        o_norm = normals[:, ncols - 1] if normals is not None and output_draw else None
        p_len = _lengths(params.prompt, p_norm, n)
        o_len = _lengths(params.output, o_norm, n)
        ends = np.cumsum(p_len + o_len)  # token-id offset (in the block) just past request k
        p_list: list[int] = p_len.tolist()
        o_list: list[int] = o_len.tolist()
        start = 0
        base = 0
        while start < n:
            # Largest run of requests whose ids fit one bulk call (at least one request).
            stop = int(np.searchsorted(ends, base + _TOKEN_CHUNK, side="right"))
            stop = min(n, max(stop, start + 1))
            chunk_end = int(ends[stop - 1])
            ids = rng.integers(0, MAX_TOKEN_ID, size=chunk_end - base).astype(np.int32)
            at: list[int] | None = None
            if times is not None:
                at = times[block_start + start : block_start + stop].tolist()
            chunk: list[Request] = []
            append = chunk.append
            pos = 0
            with gc_paused():
                for j in range(start, stop):
                    k = block_start + j
                    mid = pos + p_list[j]
                    end = mid + o_list[j]
                    prompt = (
                        np.concatenate((prefix_arr, ids[pos:mid])) if n_prefix else ids[pos:mid]
                    )
                    arrive = k * step if at is None else at[j - start]
                    append(
                        Request(
                            k, arrive, prompt, ids[mid:end], metadata=meta, private_from=n_prefix
                        )
                    )
                    pos = end
            yield from chunk
            del chunk
            start = stop
            base = chunk_end


def _copy(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator in ``rng``'s current state."""
    bit = type(rng.bit_generator)()
    bit.state = rng.bit_generator.state
    return np.random.Generator(bit)
