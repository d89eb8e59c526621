"""Repeated runs with different seeds: the mean and a confidence interval per metric.

One simulated run is one sample of a random workload: its p99 TTFT moves with the seed.
``--seeds 1,2,3`` (or ``--replicates N``: seeds ``seed, seed+1, ..., seed+N-1``) runs the
same configuration once per seed, and every numeric summary metric is reported as

* ``mean`` and ``stdev`` (sample standard deviation, ``n - 1`` in the denominator);
* ``ci_low``/``ci_high``: the two-sided Student-t interval of the mean at the chosen
  confidence (default 95 %), ``mean ± t((1 + c) / 2, n - 1) · stdev / sqrt(n)``;
* ``n``, the number of runs (with one run the interval is ``null``).

``blis plan`` asks one-sided questions instead (:func:`one_sided_bound`): "is the p99 TTFT
below the SLO with 95 % confidence?" holds when ``mean + t(c, n - 1) · stdev / sqrt(n)``
is below it. The t quantiles come from the closed forms of the Student-t distribution
for integer degrees of freedom (Abramowitz and Stegun 26.7.3-4), inverted by bisection,
so no extra package is needed and results are identical everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference_sim.config.errors import ConfigError

DEFAULT_CONFIDENCE = 0.95
MAX_REPLICATES = 1000


# --- Student t ------------------------------------------------------------------------------


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` (>= 1, integer) degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 1:  # A(t|df) = 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 ...))
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 3) // 2 + 1):
                term *= (2 * k) / (2 * k + 1) * c2
                total += term
        a = 2 / math.pi * (theta + s * c * total)
    else:  # A(t|df) = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        total, term = 1.0, 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        a = s * total
    a = min(1.0, max(0.0, a))
    return 0.5 + a / 2 if t >= 0 else 0.5 - a / 2


def t_quantile(p: float, df: int) -> float:
    """The ``t`` with ``P(T <= t) = p`` (0.5 <= p < 1), by bisection (to ~1e-12)."""
    if not 0.5 <= p < 1:
        raise ValueError(f"probability must be in [0.5, 1), got {p}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


# --- seeds ----------------------------------------------------------------------------------


def check_confidence(confidence: float, flag: str = "--confidence") -> float:
    if not (isinstance(confidence, int | float) and 0.5 <= confidence < 1):
        raise ConfigError(f"{flag} must be in [0.5, 1) (e.g. 0.95), got {confidence}")
    return float(confidence)


def parse_seeds(text: str | Sequence[int], flag: str = "--seeds") -> list[int]:
    """``"1,2,3"`` (or a list) -> ``[1, 2, 3]``: distinct integers, in order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    seeds: list[int] = []
    for item in items:
        raw = item.strip() if isinstance(item, str) else item
        try:
            value = int(raw)
            if isinstance(raw, float | bool) and raw != value:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(
                f"{flag} must be a comma-separated list of integers, got {text!r}"
            ) from None
        if value in seeds:
            raise ConfigError(f"{flag}: seed {value} is given twice")
        seeds.append(value)
    if not seeds:
        raise ConfigError(f"{flag} needs at least one seed")
    if len(seeds) > MAX_REPLICATES:
        raise ConfigError(f"{flag}: at most {MAX_REPLICATES} seeds, got {len(seeds)}")
    return seeds


def seed_list(
    seeds: str | Sequence[int] | None, replicates: int | None, base_seed: int
) -> list[int] | None:
    """The seeds of ``--seeds`` or ``--replicates N`` (from ``base_seed`` on); None: neither."""
    if seeds is not None and replicates is not None:
        raise ConfigError("give --seeds or --replicates, not both")
    if seeds is not None:
        return parse_seeds(seeds)
    if replicates is None:
        return None
    if not 1 <= replicates <= MAX_REPLICATES:
        raise ConfigError(f"--replicates must be in [1, {MAX_REPLICATES}], got {replicates}")
    return [base_seed + k for k in range(replicates)]


# --- statistics -----------------------------------------------------------------------------


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def interval(values: Sequence[float], confidence: float) -> dict[str, Any]:
    """``mean``, ``stdev``, two-sided ``ci_low``/``ci_high`` at ``confidence``, ``n``."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return {"mean": mean, "stdev": None, "ci_low": None, "ci_high": None, "n": n}
    stdev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile((1 + confidence) / 2, n - 1) * stdev / math.sqrt(n)
    return {"mean": mean, "stdev": stdev, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def one_sided_bound(values: Sequence[float], confidence: float, upper: bool) -> float:
    """The upper (or lower) confidence bound of the mean; the mean itself when n < 2."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean
    stdev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    margin = t_quantile(confidence, n - 1) * stdev / math.sqrt(n)
    return mean + margin if upper else mean - margin


def aggregate(
    summaries: Sequence[Mapping[str, Any]], confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, dict[str, Any]]:
    """Every top-level numeric metric of the summaries (first summary's order) -> interval."""
    out: dict[str, dict[str, Any]] = {}
    for key, first in summaries[0].items():
        if not _numeric(first):
            continue
        values = [s.get(key) for s in summaries]
        if all(_numeric(v) for v in values):
            out[key] = interval([float(v) for v in values], confidence)  # type: ignore[arg-type]
    return out


def mean_summary(
    summaries: Sequence[Mapping[str, Any]], seeds: Sequence[int], confidence: float
) -> dict[str, Any]:
    """The first summary with every numeric metric replaced by its mean over the runs,
    plus ``replicates``: the seeds, the confidence and every metric's interval."""
    metrics = aggregate(summaries, confidence)
    out = dict(summaries[0])
    for key, stats in metrics.items():
        out[key] = stats["mean"]
    out["replicates"] = {"seeds": list(seeds), "confidence": confidence, "metrics": metrics}
    return out


# --- the Python API and blis run ------------------------------------------------------------


@dataclass
class Replicates:
    """Runs of one configuration with different seeds (see the module doc)."""

    seeds: list[int]
    runs: list[Any]  # Results, in seed order
    confidence: float = DEFAULT_CONFIDENCE
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.metrics:
            self.metrics = aggregate([r.summary for r in self.runs], self.confidence)

    @property
    def mean(self) -> dict[str, float]:
        return {k: v["mean"] for k, v in self.metrics.items()}

    def table(self) -> Any:
        """Metrics x (mean, stdev, ci_low, ci_high, n): a DataFrame, or the dict."""
        from inference_sim.core.extras import have

        if not have("pandas"):
            return self.metrics
        import pandas as pd

        return pd.DataFrame.from_dict(self.metrics, orient="index")

    def to_dict(self) -> dict[str, Any]:
        """The results-file document of a replicated run."""
        out: dict[str, Any] = {
            "seeds": self.seeds,
            "confidence": self.confidence,
            "metrics": self.metrics,
        }
        fidelity = self.runs[0].summary.get("fidelity") if self.runs else None
        if fidelity is not None:  # the same for every seed: the deployment's domain
            out["fidelity"] = fidelity
        out["runs"] = [r.summary for r in self.runs]
        return out

    def report(self) -> str:
        """What ``blis run --seeds`` prints: a header line and the metrics as JSON."""
        import json

        seeds = ", ".join(map(str, self.seeds))
        head = (
            f"=== Replicates: {len(self.seeds)} runs (seeds {seeds}); mean and "
            f"{self.confidence:.0%} confidence interval (Student t) per metric ==="
        )
        return head + "\n" + json.dumps(self.metrics, indent=2) + "\n"

    def __repr__(self) -> str:
        bits = []
        for key in ("ttft_p99_ms", "e2e_p99_ms"):
            m = self.metrics.get(key)
            if m and m["ci_low"] is not None:
                bits.append(f"{key} {m['mean']:.4g} [{m['ci_low']:.4g}, {m['ci_high']:.4g}]")
            elif m:
                bits.append(f"{key} {m['mean']:.4g}")
        return f"<Replicates: {len(self.seeds)} seeds, {self.confidence:.0%} CI: {', '.join(bits)}>"


def replicate(
    run_config: Any = None,
    /,
    *,
    seeds: str | Sequence[int] | None = None,
    replicates: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    **options: Any,
) -> Replicates:
    """Run ``simulate(run_config, **options)`` once per seed; see :class:`Replicates`."""
    from inference_sim import simulate

    confidence = check_confidence(confidence)
    base_seed = int(options.get("seed", 42))
    chosen = seed_list(seeds, replicates, base_seed)
    if chosen is None:
        raise ConfigError("replicate() needs seeds=[...] or replicates=N")
    runs = [simulate(run_config, **{**options, "seed": s}) for s in chosen]
    return Replicates(chosen, runs, confidence)
