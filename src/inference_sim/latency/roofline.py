"""Analytical ("roofline") step time from a model's architecture and a GPU's specs.

A step's time is the larger of its compute time and its memory time, per phase (prefill
and decode are priced separately and added), plus fixed per-layer, all-reduce and
per-step overheads (engine.md §6.3)::

    compute = GEMM FLOPs / (peak x MFU) + vector FLOPs / (0.1 x peak)
    memory  = (weight bytes + KV and activation bytes) / (peak bandwidth x efficiency)
    step    = round(max(compute_p, memory_p) + max(compute_d, memory_d)
                    + layers x per-layer overhead + [TP > 1] 2 x layers x all-reduce
                    + step overhead)                                        (µs)

Plain dense models follow the reference's formulas and float evaluation order exactly,
so the step times agree with it to the microsecond. Mixture-of-experts and MLA models
use this project's formulas (``docs/roofline.md``): FLOPs from the top-k active experts
per token and weight bytes from the experts a phase touches, min(experts, tokens x top-k).

Decode is linear in each request's context S, so a decode phase is priced from two
totals -- the number of decode requests D and the sum of their contexts ΣS -- whatever
the batch size. The engines supply both in the :class:`StepBatch`
(``decode_tokens``, one per decoding request, and ``decode_context_sum``), so a decode
step costs O(1) however many requests decode (the fast stepper does not even list
them); :func:`_decode_totals` reads them, walking the listed requests only when a
hand-built batch leaves the sum at 0. Prefill requests are always listed and priced one
by one. :meth:`RooflineLatencyModel.step_time_from` takes the same inputs directly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from inference_sim.catalog.architecture import ModelArchitecture
from inference_sim.catalog.schema import GpuSpec
from inference_sim.core.request import Request
from inference_sim.latency.base import StepBatch
from inference_sim.latency.blackbox import LatencyConfigError, _check_coeffs
from inference_sim.latency.nodes import spans_nodes, warn_spans_nodes

log = logging.getLogger("inference_sim")

__all__ = ["PhaseCost", "RooflineLatencyModel", "round_half_away"]


class PhaseCost(NamedTuple):
    """One phase of a step, per GPU: FLOPs and bytes, and the seconds they take."""

    gemm_flops: float
    vector_flops: float
    dynamic_bytes: float  # KV read + KV written + activations
    weight_bytes: float
    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s)


def round_half_away(x: float) -> int:
    """Round to the nearest integer, halves away from zero (Go's ``math.Round``)."""
    if x < 0:
        return -round_half_away(-x)
    r = math.floor(x)
    if x - r >= 0.5:
        r += 1
    return int(r)


def _decode_totals(batch: StepBatch) -> tuple[int, int]:
    """(D, ΣS): how many requests decode in this step and the sum of their contexts.

    The engine supplies both: ``batch.decode_tokens`` (one token per decoding request)
    and ``batch.decode_context_sum`` (each decoder's ``num_computed_tokens`` before the
    step). A decoder's context is at least 1, so a zero sum with decoders present means
    the batch was built by hand (``StepBatch.add`` does not track contexts); the listed
    requests are walked then: a request decodes when its computed tokens have reached
    its prefill target. Every decoder is priced as one new token (engine.md §6.3).
    """
    count = batch.decode_tokens
    total = batch.decode_context_sum
    if count and not total:
        count = 0
        for req in batch.requests:
            computed = req.num_computed_tokens
            if computed >= req.prefill_target:
                count += 1
                total += computed
    return count, total


def _prefill_items(batch: StepBatch) -> list[tuple[int, int]]:
    """(S, n) for each prefill request of the batch, in batch order."""
    return [
        (req.num_computed_tokens, n)
        for req, n in zip(batch.requests, batch.num_new, strict=True)
        if req.num_computed_tokens < req.prefill_target
    ]


def _positive(value: float, what: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise LatencyConfigError(f"roofline: {what} must be a finite number > 0, got {value}")
    return v


# --------------------------------------------------------------------------- dense


class _ReferenceCosts:
    """engine.md §6.3 for dense models, products in the reference's order."""

    __slots__ = (
        "L",
        "W",
        "act1",
        "bpp",
        "d",
        "dh",
        "dkv",
        "ffn",
        "five_h",
        "four_h",
        "heads",
        "kv_tok",
        "mlp_w",
        "qkv_w",
        "tp",
    )

    def __init__(self, arch: ModelArchitecture, tp: int) -> None:
        self.tp = float(tp)
        self.L = float(arch.layers)
        self.d = float(arch.hidden)
        self.heads = float(arch.heads)
        self.ffn = float(arch.dense_ffn)
        self.bpp = float(arch.dtype_bytes)
        self.dh = self.d / self.heads
        self.dkv = float(arch.kv_heads) * self.dh
        d, dkv, L = self.d, self.dkv, self.L
        # --quantization fp8 (online, W8A8) stores the projections in one byte and
        # --kv-cache-dtype the KV; otherwise the reference's single bytes-per-parameter.
        q = arch.quantization
        w_bpp = q.bytes_per_param if q is not None and q.w8a8 else self.bpp
        kv_bpp = arch.kv_dtype_bytes or self.bpp
        self.W = ((d * (d + 2.0 * dkv) + d * d + (3.0 * d) * self.ffn) * L) * w_bpp
        self.kv_tok = (((2.0 * L) * float(arch.kv_heads)) * self.dh) * kv_bpp
        self.act1 = (L * d) * self.bpp
        # Factors of request()'s products that do not depend on the request, computed
        # once (the same operations in the same order, so the same floats).
        self.qkv_w = d * d + (2.0 * d) * dkv
        self.mlp_w = (3.0 * d) * self.ffn
        self.four_h = 4.0 * self.heads
        self.five_h = 5.0 * self.heads

    def request(self, s: int, n: int) -> tuple[float, float, float]:
        """Per-request (GEMM, VEC, dynamic bytes), not yet divided by TP."""
        L, d = self.L, self.d
        fn = float(n)
        fs = float(s)
        s_eff = fs + (fn - 1.0) / 2.0 if n > 1 else fs
        qkv = (2.0 * fn) * self.qkv_w
        out = ((2.0 * fn) * d) * d
        gemm_proj = (qkv + out) * L
        gemm_attn = (((self.four_h * fn) * s_eff) * self.dh) * L
        vec = ((self.five_h * fn) * s_eff + (2.0 * fn) * d) * L
        gemm_mlp = ((2.0 * fn) * self.mlp_w) * L
        gemm = (gemm_proj + gemm_attn) + gemm_mlp
        kv_grow = self.kv_tok * fn
        kv_read = self.kv_tok * fs
        act = self.act1 * fn
        total = ((act + kv_read) + kv_grow) + self.W
        return gemm, vec, total - self.W

    def prefill(self, items: Iterable[tuple[int, int]]) -> tuple[float, float, float, float]:
        tp = self.tp
        g = v = m = 0.0
        for s, n in items:
            gemm, vec, dyn = self.request(s, n)
            g += gemm / tp
            v += vec / tp
            m += dyn / tp
        return g, v, m, self.W / tp

    def decode(self, count: int, context_sum: int) -> tuple[float, float, float, float]:
        """Decode phase from (D, ΣS): every per-request term is a + b x S with n = 1."""
        L, d, H = self.L, self.d, self.heads
        fd = float(count)
        fs = float(context_sum)
        const = ((2.0 * (d * d + (2.0 * d) * self.dkv) + (2.0 * d) * d) * L) + (
            (2.0 * ((3.0 * d) * self.ffn)) * L
        )
        per_s = ((4.0 * H) * self.dh) * L
        gemm = fd * const + fs * per_s
        vec = fd * ((2.0 * d) * L) + fs * ((5.0 * H) * L)
        dyn = fd * (self.act1 + self.kv_tok) + fs * self.kv_tok
        tp = self.tp
        return gemm / tp, vec / tp, dyn / tp, self.W / tp


# --------------------------------------------------------------------------- MoE / MLA


class _GeneralCosts:
    """This project's terms for MoE and MLA models (docs/roofline.md, "MoE and MLA").

    Same structure as the reference, with the true head size, top-k active experts for
    FLOPs, and weight bytes from the experts a phase touches.
    """

    __slots__ = (
        "act1",
        "attn_per_s",
        "dense_w",
        "expert_w",
        "experts",
        "kv_tok_gpu",
        "moe_fixed_w",
        "moe_layers",
        "per_token",
        "top_k",
        "tp",
        "vec_per_s",
        "vec_per_token",
        "wbytes",
    )

    def __init__(self, arch: ModelArchitecture, tp: int) -> None:
        self.tp = float(tp)
        L = float(arch.layers)
        d = float(arch.hidden)
        H = float(arch.heads)
        bpp = float(arch.dtype_bytes)
        if arch.mla is not None:
            qk = float(arch.mla.qk_nope_head_dim + arch.mla.qk_rope_head_dim)
            v = float(arch.mla.v_head_dim)
        else:
            qk = v = float(arch.kv_head_dim)
        attn_params = float(arch.attention_params_per_layer()) * L
        dense_params = float(arch.dense_layers) * 3.0 * d * float(arch.dense_ffn)
        per_token = 2.0 * attn_params + 2.0 * dense_params
        moe = arch.moe
        self.moe_layers = float(moe.moe_layers) if moe else 0.0
        self.experts = moe.experts if moe else 0
        self.top_k = moe.top_k if moe else 0
        expert_params = moe_fixed = 0.0
        if moe is not None:
            expert_params = 3.0 * d * float(moe.expert_ffn)  # one expert, one layer
            moe_fixed = 3.0 * d * float(moe.shared_ffn) + d * float(moe.experts)  # shared + router
            per_token += self.moe_layers * 2.0 * (float(moe.top_k) * expert_params + moe_fixed)
        self.per_token = per_token
        self.attn_per_s = 2.0 * H * (qk + v) * L  # x n x S_eff
        self.vec_per_s = 5.0 * H * L  # x n x S_eff
        self.vec_per_token = 2.0 * d * L
        self.kv_tok_gpu = arch.kv_bytes_per_token(tp)
        self.act1 = L * d * bpp
        # Weight bytes as stored (quantized where the checkpoint is).
        groups = arch.param_breakdown()
        q = arch.quantization

        def stored(group: str) -> float:
            if q is None:
                return bpp
            scope = {
                "linear": ("attention", "dense_mlp", "shared", "experts"),
                "mlp": ("dense_mlp", "shared", "experts"),
                "experts": ("experts",),
            }[q.scope]
            return q.bytes_per_param if group in scope else bpp

        self.wbytes = stored
        self.dense_w = groups["attention"] * stored("attention") + groups["dense_mlp"] * stored(
            "dense_mlp"
        )
        self.expert_w = expert_params * stored("experts")  # one expert, one layer
        self.moe_fixed_w = 0.0
        if moe is not None:
            self.moe_fixed_w = self.moe_layers * (
                3.0 * d * float(moe.shared_ffn) * stored("shared") + d * float(moe.experts) * bpp
            )

    def weights(self, tokens: int) -> float:
        """Per-GPU weight bytes a phase of ``tokens`` tokens reads."""
        w = self.dense_w + self.moe_fixed_w
        if self.experts:
            touched = min(self.experts, tokens * self.top_k)
            w += self.moe_layers * float(touched) * self.expert_w
        return w / self.tp

    def request(self, s: int, n: int) -> tuple[float, float, float]:
        """Per-request (GEMM, VEC) not yet divided by TP, and per-GPU dynamic bytes."""
        fn = float(n)
        fs = float(s)
        s_eff = fs + (fn - 1.0) / 2.0 if n > 1 else fs
        gemm = fn * self.per_token + self.attn_per_s * fn * s_eff
        vec = self.vec_per_s * fn * s_eff + self.vec_per_token * fn
        dyn = self.act1 * fn / self.tp + self.kv_tok_gpu * (fs + fn)
        return gemm, vec, dyn

    def prefill(self, items: Iterable[tuple[int, int]]) -> tuple[float, float, float, float]:
        tp = self.tp
        g = v = m = 0.0
        tokens = 0
        for s, n in items:
            gemm, vec, dyn = self.request(s, n)
            g += gemm / tp
            v += vec / tp
            m += dyn
            tokens += n
        return g, v, m, self.weights(tokens)

    def decode(self, count: int, context_sum: int) -> tuple[float, float, float, float]:
        fd = float(count)
        fs = float(context_sum)
        tp = self.tp
        gemm = fd * self.per_token + fs * self.attn_per_s
        vec = fs * self.vec_per_s + fd * self.vec_per_token
        dyn = fd * (self.act1 / tp + self.kv_tok_gpu) + fs * self.kv_tok_gpu
        return gemm / tp, vec / tp, dyn, self.weights(count)


# --------------------------------------------------------------------------- model


class RooflineLatencyModel:
    """Step time from FLOPs and bytes (engine.md §6.3); queueing and per-token overhead from alpha.

    ``alpha`` has the blackbox meaning (queueing = alpha0 + alpha1 x prompt tokens,
    per-output-token overhead = alpha2, µs). ``beta`` is accepted for symmetry with the
    blackbox model and ignored (a warning is logged when it is non-zero).
    """

    name = "roofline"

    def __init__(
        self,
        architecture: ModelArchitecture,
        gpu: GpuSpec,
        tp: int,
        alpha: Sequence[float] = (0.0, 0.0, 0.0),
        beta: Sequence[float] | None = None,
    ) -> None:
        if isinstance(tp, bool) or not isinstance(tp, int) or tp <= 0:
            raise LatencyConfigError(f"roofline: --tp must be an integer > 0, got {tp!r}")
        arch = architecture
        for what, value in (
            ("layers", arch.layers),
            ("hidden size", arch.hidden),
            ("attention heads", arch.heads),
            ("bytes per parameter", arch.dtype_bytes),
        ):
            _positive(value, f"model {what}")
        self.peak = _positive(gpu.peak_tflops, f"{gpu.name} peak TFLOP/s") * 1e12
        bw_peak = _positive(gpu.peak_bandwidth_tbs, f"{gpu.name} peak bandwidth (TB/s)")
        eff = _positive(gpu.bandwidth_efficiency, f"{gpu.name} bandwidth efficiency")
        self.mfu_prefill = _positive(gpu.mfu_prefill, f"{gpu.name} prefill MFU")
        self.mfu_decode = _positive(gpu.mfu_decode, f"{gpu.name} decode MFU")
        for what, value in (
            ("step overhead", gpu.step_overhead_us),
            ("per-layer overhead", gpu.per_layer_overhead_us),
            ("all-reduce latency", gpu.allreduce_latency_us),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise LatencyConfigError(f"roofline: {gpu.name} {what} must be >= 0, got {value}")
        self.alpha = _check_coeffs("alpha-coeffs", alpha)
        if beta is not None and any(float(b) != 0.0 for b in beta):
            log.warning(
                "roofline: --beta-coeffs are ignored (the step time comes from the roofline)"
            )
        self.architecture = arch
        self.gpu = gpu
        self.tp = tp
        self.bw = (bw_peak * 1e12) * eff
        self.vpeak = 0.10 * self.peak
        self._costs: _ReferenceCosts | _GeneralCosts = (
            _ReferenceCosts(arch, tp) if arch.uses_reference_formulas else _GeneralCosts(arch, tp)
        )
        L = float(arch.layers)
        self._layer_s = (L * gpu.per_layer_overhead_us) / 1e6
        self._comm_s = ((L * 2.0) * gpu.allreduce_latency_us) / 1e6 if tp > 1 else 0.0
        # A TP group larger than a node: the reference's formulas price it as one NVLink
        # node (DECISIONS: dense roofline results agree with the reference), so say so;
        # the calibrated model prices the network between nodes (latency/nodes.py).
        if tp > 1 and spans_nodes(gpu.name, tp):
            warn_spans_nodes(gpu.name, tp, arch.name, priced=False)
        self._step_overhead = gpu.step_overhead_us
        self._otp = int(self.alpha[2])
        self._empty_us = self._finish(0.0)

    # ----------------------------------------------------------------- phases

    def _phase(self, parts: tuple[float, float, float, float], mfu: float) -> PhaseCost:
        g, v, m, w = parts
        compute = g / (self.peak * mfu) + v / self.vpeak
        memory = (w + m) / self.bw
        return PhaseCost(g, v, m, w, compute, memory)

    def prefill_cost(self, items: Iterable[tuple[int, int]]) -> PhaseCost:
        """Per-GPU cost of a prefill phase; ``items`` are (context S, new tokens n)."""
        return self._phase(self._costs.prefill(items), self.mfu_prefill)

    def decode_cost(self, count: int, context_sum: int) -> PhaseCost:
        """Per-GPU cost of a decode phase of ``count`` requests with contexts summing to ΣS."""
        return self._phase(self._costs.decode(count, context_sum), self.mfu_decode)

    def _finish(self, hardware_s: float) -> int:
        t = hardware_s * 1e6 + self._layer_s * 1e6 + self._comm_s * 1e6 + self._step_overhead
        return round_half_away(t)

    # ----------------------------------------------------------------- protocol

    def step_time_from(
        self,
        prefill: Sequence[tuple[int, int]],
        decode_count: int,
        decode_context_sum: int,
    ) -> int:
        """Step time (µs) from the prefill requests' (S, n) and the decode totals (D, ΣS)."""
        hardware = 0.0
        if prefill:
            hardware += self.prefill_cost(prefill).seconds
        if decode_count:
            hardware += self.decode_cost(decode_count, decode_context_sum).seconds
        return self._finish(hardware)

    def step_time(self, batch: StepBatch) -> int:
        prefill = _prefill_items(batch) if batch.prefill_tokens else []
        count, total = _decode_totals(batch)
        if not prefill and not count:
            return self._empty_us
        return self.step_time_from(prefill, count, total)

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
            "architecture": self.architecture.name,
            "gpu": self.gpu.name,
            "tp": self.tp,
            "formulas": "reference" if self.architecture.uses_reference_formulas else "moe-mla",
        }
