"""Admission policies: decide at arrival whether a request enters the cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from inference_sim.instance.request import Request


class AdmissionPolicy(Protocol):
    name: str

    def admit(self, req: Request, now: int) -> bool: ...


class AlwaysAdmit:
    name = "always-admit"

    def admit(self, req: Request, now: int) -> bool:
        return True


class RejectAll:
    name = "reject-all"

    def admit(self, req: Request, now: int) -> bool:
        return False


class TokenBucket:
    """Admit while the bucket holds at least the request's prompt tokens.

    The bucket starts full at ``capacity`` and refills at ``refill_rate`` tokens per
    second of simulated time.
    """

    name = "token-bucket"

    def __init__(self, capacity: float = 10000.0, refill_rate: float = 1000.0) -> None:
        if not capacity > 0 or capacity == float("inf"):
            raise ValueError(f"--token-bucket-capacity must be a finite value > 0, got {capacity}")
        if not refill_rate > 0 or refill_rate == float("inf"):
            raise ValueError(
                f"--token-bucket-refill-rate must be a finite value > 0, got {refill_rate}"
            )
        self.capacity = capacity
        self.refill_rate = refill_rate
        self.tokens = capacity
        self.last = 0

    def admit(self, req: Request, now: int) -> bool:
        if now > self.last:
            self.tokens = min(
                self.capacity, self.tokens + (now - self.last) * self.refill_rate / 1e6
            )
            self.last = now
        cost = req.num_prompt_tokens
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


ADMISSION_POLICIES: dict[str, Callable[..., Any]] = {
    "always-admit": AlwaysAdmit,
    "reject-all": RejectAll,
    "token-bucket": TokenBucket,
}
