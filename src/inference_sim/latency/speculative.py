"""Pricing a speculative-decoding step: verification of 1 + k tokens and the drafting.

Why a separate module: the three built-in latency models price a step from the same
shape — prefill requests as ``(context S, new tokens n)`` and decoders as a count and a
context sum — so verification can be priced without touching them. A decoder that
verifies ``1 + k`` tokens is its one decode token plus ``k`` extra query tokens at its
context; the extra tokens are priced as the *marginal* cost of growing that request from
a 1-token chunk to a ``1 + k``-token chunk (their compute, their attention over the
context and their KV writes). At ``k = 0`` the step therefore costs exactly what the
non-speculative step costs, so acceptance 0 can never make a run faster.

The blackbox regression has no per-request shape: its extra tokens are priced as
prefill-like tokens (``beta1`` each), the one decode token per request stays a decode
token (``beta2``).

EAGLE-style draft heads are priced as fractions of the target's step
(``instance/speculative.py``); which fraction depends on whether the target step's time
counts the LM head (:func:`step_prices_lm_head`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference_sim.core.batch import StepBatch
from inference_sim.latency.base import LatencyModel
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.latency.roofline import RooflineLatencyModel

__all__ = ["decode_step_time", "extra_verification_time", "step_prices_lm_head"]


def step_prices_lm_head(model: LatencyModel) -> bool:
    """Whether ``model``'s step time includes the LM head (its weights and logits).

    The roofline prices the decoder layers only (engine.md §6.3: no embedding, no LM
    head); the calibrated model adds the LM head's weights and one row of logits per
    request; the blackbox regression was fitted on measured steps, which run it. A
    plug-in model is taken to price a whole step.
    """
    return not isinstance(model, RooflineLatencyModel)


def extra_verification_time(
    model: LatencyModel,
    batch: StepBatch,
    prefill: Sequence[tuple[int, int]],
    verify: Sequence[tuple[int, int]],
    count: int,
    context_sum: int,
) -> int:
    """Time (µs) the draft tokens in ``verify`` add to the plain step ``batch``.

    ``prefill`` lists the prefill requests' ``(S, n)``; ``verify`` the speculating
    decoders' ``(S, 1 + k)``; ``count``/``context_sum`` cover every decoder (speculating
    or not), as in a plain step. ``batch`` is the plain step (one token per decoder),
    priced by ``model.step_time`` as usual; this is what comes on top.
    """
    if not verify:
        return 0
    if isinstance(model, BlackboxLatencyModel):
        extra = sum(n - 1 for _, n in verify)
        b0, b1, b2 = model.beta[:3]
        with_drafts = int(b0 + b1 * float(batch.prefill_tokens + extra) + b2 * float(count))
        plain = int(b0 + b1 * float(batch.prefill_tokens) + b2 * float(count))
        return max(0, with_drafts - plain)
    step_from: Any = getattr(model, "step_time_from", None)
    if step_from is None:
        return 0  # a plug-in model without a step shape: extra tokens are not priced
    plain_count = count - len(verify)
    plain_ctx = context_sum - sum(s for s, _ in verify)
    items = list(prefill)
    with_drafts = step_from(items + list(verify), plain_count, plain_ctx)
    without = step_from(items + [(s, 1) for s, _ in verify], plain_count, plain_ctx)
    extra_us = int(with_drafts - without)
    return extra_us if extra_us > 0 else 0


def decode_step_time(
    model: LatencyModel,
    prefill: Sequence[tuple[int, int]],
    count: int,
    context_sum: int,
) -> int:
    """One forward of ``model`` over ``count`` decoders (and ``prefill``, if any).

    Prices a draft model's steps, and (scaled) the one-layer draft heads of EAGLE/MTP.
    """
    step_from: Any = getattr(model, "step_time_from", None)
    if step_from is not None:
        return int(step_from(list(prefill), count, context_sum))
    batch = StepBatch()
    batch.prefill_tokens = sum(n for _, n in prefill)
    batch.decode_tokens = count
    batch.decode_context_sum = context_sum
    return int(model.step_time(batch))
