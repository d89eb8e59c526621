"""Admission policies: decide, at the admission event, whether a request enters the cluster.

``admit(request, state)`` returns ``(admitted, reason)`` (a bare ``bool`` is accepted
from plug-ins). A rejected request is gone: it is counted in ``rejected_requests``.
"""

from __future__ import annotations

import math

from inference_sim.core.request import Request
from inference_sim.policies.base import AdmissionDecision, PolicyError, RouterState
from inference_sim.policies.registry import Registry

ADMISSION = Registry(
    "admission", "admission policy", "admit", "always-admit", "admit(request, state)"
)

_ADMIT = AdmissionDecision(True, "")


@ADMISSION.register("always-admit")
class AlwaysAdmit:
    """Admit everything."""

    def admit(self, request: Request, state: RouterState) -> AdmissionDecision:
        return _ADMIT


@ADMISSION.register("reject-all")
class RejectAll:
    """Reject everything (pathological, for testing)."""

    _NO = AdmissionDecision(False, "reject-all")

    def admit(self, request: Request, state: RouterState) -> AdmissionDecision:
        return self._NO


class TokenBucket:
    """Admit while the bucket holds at least the request's prompt tokens.

    The bucket starts full at ``capacity`` and refills at ``refill_rate`` tokens per
    second of simulated time (refilled lazily at each decision, never above capacity).
    A request costs its input token count; one longer than ``capacity`` is never admitted.
    """

    _NO = AdmissionDecision(False, "insufficient tokens")

    def __init__(self, capacity: float = 10000.0, refill_rate: float = 1000.0) -> None:
        for flag, v in (
            ("--token-bucket-capacity", capacity),
            ("--token-bucket-refill-rate", refill_rate),
        ):
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise PolicyError(f"{flag} must be a finite number > 0, got {v}")
        self.capacity = float(capacity)
        self.refill_rate = float(refill_rate)
        self.tokens = self.capacity
        self.last = 0

    def admit(self, request: Request, state: RouterState) -> AdmissionDecision:
        now = state.clock
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_rate / 1e6)
            self.last = now
        cost = float(request.num_prompt_tokens)
        if self.tokens >= cost:
            self.tokens -= cost
            return _ADMIT
        return self._NO


@ADMISSION.register("token-bucket")
def _token_bucket(
    token_bucket_capacity: float = 10000.0, token_bucket_refill_rate: float = 1000.0
) -> TokenBucket:
    return TokenBucket(token_bucket_capacity, token_bucket_refill_rate)
