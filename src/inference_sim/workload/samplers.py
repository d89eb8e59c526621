"""Length and inter-arrival samplers of the workload spec (vectorised, numpy streams).

Every sampler draws from the generator it is given and only from it, one value at a time
in order, so drawing ``n`` values at once or in several calls gives the same numbers
(numpy's generators continue their stream across calls). That is what makes a workload
independent of how the generator chunks its work.

Length samplers return ``int64`` arrays. Token lengths are floored at 1 (the reference's
"min-1 floor"); counts and percentages use a floor of 0. Unbounded laws (exponential,
pareto_lognormal) are capped at :data:`MAX_SAMPLED_LENGTH` unless a ``max`` is given, so
one extreme draw cannot allocate gigabytes of token ids.

Inter-arrival samplers draw *unit-mean* gaps; the generator divides them by the rate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from inference_sim.core.suggest import did_you_mean
from inference_sim.workload.errors import WorkloadError

MAX_SAMPLED_LENGTH = 1_000_000
"""Largest length an unbounded distribution yields (values above are capped)."""

MAX_REQUEST_TOKENS = 2**24
"""Longest prompt or output (tokens) any workload source may ask for: a request holds its
token ids in memory (4 bytes each), so a typo such as ``value: 100000000000`` is rejected
with a clear error instead of exhausting memory."""


def check_length_bound(value: float, where: str) -> None:
    """Raise unless ``value`` (a length given explicitly) is at most MAX_REQUEST_TOKENS."""
    if value > MAX_REQUEST_TOKENS:
        try:
            shown = f"{value:g}" if isinstance(value, float) else f"{value}"
        except (OverflowError, ValueError):  # beyond a float, or too many digits to print
            shown = "a larger number"
        raise WorkloadError(
            f"{where} must be <= {MAX_REQUEST_TOKENS} tokens (the longest request the "
            f"simulator holds), got {shown}"
        )


DIST_TYPES = ("gaussian", "exponential", "pareto_lognormal", "empirical", "constant")
ARRIVAL_PROCESSES = ("poisson", "gamma", "weibull", "constant")

_REQUIRED: dict[str, tuple[str, ...]] = {
    "gaussian": ("mean", "std_dev", "min", "max"),
    "exponential": ("mean",),
    "pareto_lognormal": ("alpha", "xm", "mu", "sigma", "mix_weight"),
    "constant": ("value",),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "gaussian": (),
    "exponential": ("min", "max"),
    "pareto_lognormal": ("min", "max"),
    "constant": (),
}
_TINY = np.finfo(np.float64).tiny


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero (as the reference), as float64."""
    a = np.abs(x)
    f = np.floor(a)
    r: np.ndarray = np.copysign(np.where(a - f >= 0.5, f + 1.0, f), x)
    return r


def _finish(v: np.ndarray, floor: int, lo: float | None, hi: float | None) -> np.ndarray:
    """Cap (unless a ``hi`` is given), clamp to [lo, hi] (if given), round, floor; int64.

    A draw that overflowed to +inf (``pareto_lognormal`` with ``mu: 710``, ``gaussian``
    with ``std_dev: 1e308``) is larger than any bound, so it becomes the upper bound (the
    ``max``, else the cap), as a huge finite draw does; it used to become 1 token. NaN
    and -inf carry no size and stay 1 (then clamped to [lo, hi] like any draw).
    """
    upper = float(MAX_SAMPLED_LENGTH) if hi is None else hi
    v = np.where(v == np.inf, upper, v)
    v = np.where(np.isfinite(v), v, 1.0)
    if hi is None:  # an explicit max replaces the cap (docs/workloads.md)
        v = np.minimum(v, float(MAX_SAMPLED_LENGTH))
    if lo is not None or hi is not None:
        v = np.clip(v, lo if lo is not None else -np.inf, hi if hi is not None else np.inf)
    r = _round_half_away(v).astype(np.int64)
    if floor:
        np.maximum(r, floor, out=r)
    else:
        np.maximum(r, 0, out=r)
    return r


class LengthSampler:
    """Base class: ``sample(rng, n)`` returns ``n`` integer lengths."""

    floor: int = 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    @property
    def mean(self) -> float:  # pragma: no cover - informative only
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantLength(LengthSampler):
    value: int
    floor: int = 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, max(self.value, self.floor), dtype=np.int64)

    @property
    def mean(self) -> float:
        return float(max(self.value, self.floor))


@dataclass(frozen=True)
class GaussianLength(LengthSampler):
    mu: float
    std_dev: float
    lo: int
    hi: int
    floor: int = 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.lo == self.hi:  # degenerate range: no draw, no floor (reference 6.1)
            return np.full(n, self.lo, dtype=np.int64)
        # A huge std_dev overflows to +-inf: _finish sends +inf to ``max``; the warning
        # numpy would print for it says nothing the user can act on.
        with np.errstate(over="ignore", invalid="ignore"):
            v = rng.standard_normal(n) * self.std_dev + self.mu
        return _finish(v, self.floor, self.lo, self.hi)

    @property
    def mean(self) -> float:
        return self.mu


@dataclass(frozen=True)
class ExponentialLength(LengthSampler):
    mu: float
    lo: float | None = None
    hi: float | None = None
    floor: int = 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        with np.errstate(over="ignore"):  # mean <= 2**24 today; kept quiet if that moves
            v = rng.standard_exponential(n) * self.mu
        return _finish(v, self.floor, self.lo, self.hi)

    @property
    def mean(self) -> float:
        return self.mu


@dataclass(frozen=True)
class ParetoLognormalLength(LengthSampler):
    """A mixture: Pareto(alpha, xm) with probability ``mix_weight``, else log-normal."""

    alpha: float
    xm: float
    mu: float
    sigma: float
    mix_weight: float
    lo: float | None = None
    hi: float | None = None
    floor: int = 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # Four uniforms per value, value after value (a row each): drawing the three
        # laws' arrays one after the other (n picks, then n Pareto, then n normal draws)
        # made value k depend on n, so one call of 6 differed from two calls of 3 and the
        # lengths before the horizon moved with --horizon. The normal is Box-Muller of
        # the last two uniforms (1 - b1 is in (0, 1], so the log is finite).
        draws = rng.random((n, 4))
        pick, u, b1, b2 = draws[:, 0], draws[:, 1], draws[:, 2], draws[:, 3]
        u = np.where(u == 0.0, _TINY, u)
        z = np.sqrt(-2.0 * np.log1p(-b1)) * np.cos(2.0 * np.pi * b2)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            pareto = self.xm / np.power(u, 1.0 / self.alpha)
            lognormal = np.exp(self.mu + self.sigma * z)
        v = np.where(pick < self.mix_weight, pareto, lognormal)
        return _finish(v, self.floor, self.lo, self.hi)

    @property
    def mean(self) -> float:
        pareto = self.alpha * self.xm / (self.alpha - 1) if self.alpha > 1 else math.inf
        lognormal = math.exp(self.mu + self.sigma**2 / 2)
        return self.mix_weight * pareto + (1 - self.mix_weight) * lognormal


@dataclass(frozen=True)
class EmpiricalLength(LengthSampler):
    """A discrete law over integer lengths: ``values[i]`` with CDF ``cdf[i]``."""

    values: tuple[int, ...]
    cdf: tuple[float, ...]
    floor: int = 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        vals = np.asarray(self.values, dtype=np.int64)
        if len(vals) == 1:  # one bin: no draw
            out = np.full(n, vals[0], dtype=np.int64)
        else:
            idx = np.searchsorted(np.asarray(self.cdf), rng.random(n), side="left")
            out = vals[np.minimum(idx, len(vals) - 1)]
        return np.maximum(out, self.floor)

    @property
    def mean(self) -> float:
        prev = 0.0
        total = 0.0
        for v, c in zip(self.values, self.cdf, strict=True):
            total += max(v, self.floor) * (c - prev)
            prev = c
        return total


def _to_float(value: int | float) -> float:
    """``float(value)``, an integer beyond a float's range (400 digits) being +-inf."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _finite(params: Mapping[str, object], name: str, where: str) -> float:
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkloadError(f"{where}.params.{name} must be a number, got {value!r}")
    v = _to_float(value)
    if not math.isfinite(v):
        raise WorkloadError(f"{where}.params.{name} must be a finite number, got {v}")
    return v


def _empirical_key(key: object, where: str) -> int:
    """An empirical bin key: an integer, or a decimal string of an integral number."""
    if isinstance(key, bool):
        raise WorkloadError(f"{where}.params: key {key!r} is not an integer token count")
    if isinstance(key, int):  # checked as an int: one of 400 digits is beyond a float
        shown = f"{key}" if len(str(key)) <= 40 else "of more than 40 digits"
        if key < 0:
            raise WorkloadError(f"{where}.params: key {shown} must be >= 0")
        check_length_bound(key, f"{where}.params: key {shown}")
        return key
    try:
        value = float(str(key).strip())
    except ValueError:
        raise WorkloadError(f"{where}.params: key {key!r} is not an integer token count") from None
    if not math.isfinite(value) or value != int(value):
        raise WorkloadError(f"{where}.params: key {key!r} is not an integer token count")
    if value < 0:
        raise WorkloadError(f"{where}.params: key {key!r} must be >= 0")
    check_length_bound(value, f"{where}.params: key {key!r}")
    return int(value)


def empirical_from_pdf(pdf: Mapping[int, float], where: str, *, floor: int = 1) -> EmpiricalLength:
    """Build an empirical sampler from ``{length: weight}`` (weights need not sum to 1)."""
    total = 0.0
    for length, weight in pdf.items():
        if not math.isfinite(weight) or weight < 0:
            raise WorkloadError(
                f"{where}.params.{length}: weight must be a finite number >= 0, got {weight}"
            )
        total += weight
    if total <= 0:
        raise WorkloadError(f"{where}.params: empirical distribution has no bin with weight > 0")
    values: list[int] = []
    cdf: list[float] = []
    acc = 0.0
    for length in sorted(pdf):
        w = pdf[length]
        if w <= 0:
            continue
        acc += w / total
        values.append(length)
        cdf.append(acc)
    cdf[-1] = 1.0
    return EmpiricalLength(tuple(values), tuple(cdf), floor)


def make_length_sampler(
    dist_type: str,
    params: Mapping[object, object],
    where: str,
    *,
    floor: int = 1,
    notes: list[str] | None = None,
) -> LengthSampler:
    """Validate a distribution spec and build its sampler; errors name ``where``.

    ``where`` is the field path, e.g. ``clients[0].input_distribution``. A non-integral
    token count is truncated with a note: appended to ``notes`` when given (the spec
    loader holds its notes back in :attr:`WorkloadSpec.warnings`, said once per field
    after the run's checks, and the generator, rebuilding samplers of a spec already
    loaded, passes a list it drops), else logged at once (a caller of its own).
    """
    if dist_type not in DIST_TYPES:
        raise WorkloadError(
            f'{where}.type: unknown distribution type "{dist_type}"'
            f"{did_you_mean(dist_type, DIST_TYPES)}; valid: {', '.join(DIST_TYPES)}"
        )
    if dist_type == "empirical":
        if not params:
            raise WorkloadError(
                f"{where}: empirical distribution needs inline params "
                "({token_count: weight, ...}); `file` is not read"
            )
        pdf: dict[int, float] = {}
        for key, weight in params.items():
            length = _empirical_key(key, where)
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise WorkloadError(f"{where}.params.{key} must be a number, got {weight!r}")
            # duplicates are summed; a weight beyond a float (400 digits) is +inf, refused
            pdf[length] = pdf.get(length, 0.0) + _to_float(weight)
        return empirical_from_pdf(pdf, where, floor=floor)

    names = {str(k) for k in params}
    required = _REQUIRED[dist_type]
    allowed = required + _OPTIONAL[dist_type]
    for name in sorted(names - set(allowed)):
        raise WorkloadError(
            f'{where}.params: unknown parameter "{name}" for {dist_type}'
            f"{did_you_mean(name, allowed)}; valid: {', '.join(allowed)}"
        )
    for name in required:
        if name not in names:
            raise WorkloadError(f'{where}: {dist_type} distribution requires parameter "{name}"')
    p = {str(k): v for k, v in params.items()}
    f = {name: _finite(p, name, where) for name in names}
    lo = f.get("min")
    hi = f.get("max")
    if lo is not None and lo < 0:
        raise WorkloadError(f"{where}.params.min must be >= 0, got {lo}")
    if lo is not None and hi is not None and lo > hi:
        raise WorkloadError(f"{where}.params.min must be <= max, got min {lo} > max {hi}")
    # token counts: truncated (the warning below), for every law that takes them
    lo = float(int(lo)) if lo is not None else None
    hi = float(int(hi)) if hi is not None else None
    for name in ("min", "max", "value", "mean", "xm"):  # a mean beyond it is a typo too
        if name in f:
            check_length_bound(f[name], f"{where}.params.{name}")
    for name in ("min", "max", "value"):  # token counts: truncated, as the reference does
        if name in f and not f[name].is_integer():
            note = (
                f"{where}.params.{name} {p[name]} is truncated to {int(f[name])} (token "
                "counts are whole numbers; the reference truncates too)"
            )
            if notes is None:
                logging.getLogger("inference_sim").warning("%s", note)
            else:
                notes.append(note)

    if dist_type == "constant":
        if f["value"] < 0:
            raise WorkloadError(f"{where}.params.value must be >= 0, got {f['value']}")
        return ConstantLength(int(f["value"]), floor)
    if dist_type == "gaussian":
        if f["std_dev"] < 0:
            raise WorkloadError(f"{where}.params.std_dev must be >= 0, got {f['std_dev']}")
        if lo is not None and hi is not None and not lo <= f["mean"] <= hi:
            # Every draw would be clamped to one bound: a constant, not the distribution
            # the file describes (the CLI refuses the same numbers, --prompt-tokens).
            # The bounds as truncated (the warning above), as the draws are clamped.
            raise WorkloadError(
                f"{where}.params.mean must lie in [min, max] = [{lo:g}, {hi:g}], got {f['mean']:g}"
            )
        return GaussianLength(f["mean"], f["std_dev"], int(f["min"]), int(f["max"]), floor)
    if dist_type == "exponential":
        if f["mean"] <= 0:
            raise WorkloadError(f"{where}.params.mean must be > 0, got {f['mean']}")
        return ExponentialLength(f["mean"], lo, hi, floor)
    # pareto_lognormal
    if f["alpha"] <= 0:
        raise WorkloadError(f"{where}.params.alpha must be > 0, got {f['alpha']}")
    if f["xm"] <= 0:
        raise WorkloadError(f"{where}.params.xm must be > 0, got {f['xm']}")
    if f["sigma"] < 0:
        raise WorkloadError(f"{where}.params.sigma must be >= 0, got {f['sigma']}")
    if not 0.0 <= f["mix_weight"] <= 1.0:
        raise WorkloadError(f"{where}.params.mix_weight must be in [0, 1], got {f['mix_weight']}")
    return ParetoLognormalLength(
        f["alpha"], f["xm"], f["mu"], f["sigma"], f["mix_weight"], lo, hi, floor
    )


# --- inter-arrival times ------------------------------------------------------------------


#: The ``cv`` each renewal process accepts (inclusive). Weibull's is the reference's
#: (workload spec 5.4); its shape is solved on [0.05, 200], which covers it. Gamma's
#: shape is ``1 / cv²``: below 1e-150 it overflows a float (cv 1e-200 divided by zero,
#: 1e-160 gave an infinite shape and NaN gaps); above 1000 (shape < 1e-6) numpy's
#: sampler returns 0 for nearly every gap (99.9% at 1000, all of them from about 1e5),
#: so the arrivals collapse to 1 µs apart and the rate the spec asks for is met only
#: over more arrivals than any run takes. A bound the user can read, not a NaN.
ARRIVAL_CV_RANGE: dict[str, tuple[float, float]] = {
    "gamma": (1e-150, 1e3),
    "weibull": (0.01, 10.4),
}


def check_arrival_cv(process: str, cv: float, where: str) -> None:
    """Raise unless ``cv`` (> 0, finite) is in ``process``'s :data:`ARRIVAL_CV_RANGE`.

    ``where`` names the field (``clients[0].arrival.cv``); processes without a range
    (poisson, constant: their CV is fixed) accept any.
    """
    bounds = ARRIVAL_CV_RANGE.get(process)
    if bounds is not None and not bounds[0] <= cv <= bounds[1]:
        raise WorkloadError(
            f"{where}: {process} CV must be in [{bounds[0]:g}, {bounds[1]:g}], got {cv}"
        )


def weibull_shape(cv: float) -> float:
    """The Weibull shape ``k`` whose coefficient of variation is ``cv`` (bisection).

    CV(k) = sqrt(Γ(1 + 2/k) / Γ(1 + 1/k)² − 1) decreases in k; solved on [0.05, 200] to
    about 1e-12, tighter than the reference's 0.001 tolerance.
    """

    def cv_of(k: float) -> float:
        return math.sqrt(math.expm1(math.lgamma(1 + 2 / k) - 2 * math.lgamma(1 + 1 / k)))

    lo, hi = 0.05, 200.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if cv_of(mid) > cv:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * mid:
            break
    return (lo + hi) / 2


class UnitGaps:
    """Inter-arrival gaps with mean 1 and the configured coefficient of variation."""

    def __init__(self, process: str, cv: float | None) -> None:
        self.process = process
        c = 1.0 if cv is None or cv <= 0 else float(cv)
        self.cv = c
        # A spec's cv is checked on load, naming its field; this guards the other
        # sources (ServeGen rows, code) from a shape that is 0, infinite or NaN.
        check_arrival_cv(process, c, "arrival.cv")
        if process == "gamma":
            self._shape = 1.0 / (c * c)
        elif process == "weibull":
            self._shape = weibull_shape(c)
            self._scale = 1.0 / math.gamma(1.0 + 1.0 / self._shape)
        elif process not in ("poisson", "constant"):
            raise WorkloadError(f'unknown arrival process "{process}"')

    @property
    def deterministic(self) -> bool:
        return self.process == "constant"

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.process == "poisson":
            return rng.standard_exponential(n)
        if self.process == "gamma":
            return rng.standard_gamma(self._shape, n) / self._shape
        if self.process == "weibull":
            return rng.weibull(self._shape, n) * self._scale
        return np.ones(n)
