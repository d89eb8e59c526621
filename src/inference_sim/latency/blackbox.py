"""Trained-coefficient ("blackbox") latency: linear in scheduled tokens.

step = beta0 + beta1 * prefill_tokens + beta2 * decode_tokens          (µs, truncated)
queueing = alpha0 + alpha1 * prompt_tokens                             (µs, truncated)
per-output-token overhead = alpha2                                     (µs, truncated)

Prefill tokens are the uncached tokens computed in the step (prefix hits excluded);
decode tokens are one per decoding request scheduled in the step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from inference_sim.core.request import Request
from inference_sim.latency.base import StepBatch


class LatencyConfigError(ValueError):
    """Invalid coefficients for a latency model."""


def _check_coeffs(name: str, values: Sequence[float], *, need: int = 3) -> tuple[float, ...]:
    if len(values) < need:
        raise LatencyConfigError(
            f"--{name} needs at least {need} comma-separated numbers, got {len(values)}"
        )
    out = tuple(float(v) for v in values)
    for i, v in enumerate(out):
        if not math.isfinite(v):
            raise LatencyConfigError(f"--{name}[{i}] must be a finite number, got {v}")
        if v < 0:
            raise LatencyConfigError(f"--{name}[{i}] must be >= 0, got {v}")
    return out


class BlackboxLatencyModel:
    """Linear step-time regression with the reference's alpha/beta coefficients."""

    name = "blackbox"
    __slots__ = ("_b0", "_b1", "_b2", "_otp", "alpha", "beta")

    def __init__(self, alpha: Sequence[float], beta: Sequence[float]) -> None:
        self.alpha = _check_coeffs("alpha-coeffs", alpha)
        self.beta = _check_coeffs("beta-coeffs", beta)
        self._b0, self._b1, self._b2 = self.beta[:3]
        self._otp = int(self.alpha[2])

    def step_time(self, batch: StepBatch) -> int:
        return int(
            self._b0
            + self._b1 * float(batch.prefill_tokens)
            + self._b2 * float(batch.decode_tokens)
        )

    def queueing_time(self, req: Request) -> int:
        t = 0.0
        t += self.alpha[0]
        t += self.alpha[1] * float(req.num_prompt_tokens)
        return int(t)

    def output_token_time(self) -> int:
        return self._otp

    def describe(self) -> dict[str, object]:
        return {
            "latency_model": self.name,
            "alpha_coeffs": list(self.alpha),
            "beta_coeffs": list(self.beta),
        }
