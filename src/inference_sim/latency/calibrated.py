"""Physics-informed ("calibrated") step time: roofline terms x fitted corrections + overheads.

One coefficient set serves every model, GPU and TP degree: the terms are computed from
the model's architecture and the GPU's specs, and the coefficients only correct how
efficiently the hardware runs them (docs/calibration.md). Per engine step, per GPU::

    lin   = smoothmax(weight_read x weight bytes / BW,  compute x GEMM FLOPs / peak)
    kv    = kv_read x KV bytes read and written / BW
    attn  = attention x prefill attention FLOPs / peak
    comm  = [TP > 1] 2 x layers x (allreduce_us x lat(GPU, TP) + all-reduce bytes / bus(GPU, TP))
    samp  = [filtered sampling] x (sampler_step_us + requests x sampler_us x vocab / 100 000)
    step  = lin + kv + attn + comm + samp + pen + step_us + layer units x layer_us x small(GPU)
            + [TP > 1] x TP x worker_us + requests x request_us

``layer units`` is the layer count, plus for mixture-of-experts models each MoE layer's
extra kernels (routing, token sort, combine, activation quantization, shared expert) in
tenths of a dense layer's ten (:func:`moe_extra_kernels`).
``lat``, ``bus`` and ``small`` come from the GPU's measured timings (NCCL all-reduce per
TP degree, small per-layer kernels; :class:`GpuCorrection`). ``worker_us`` is the
multiprocessing executor's hand-off to each TP worker. With ``overlap`` q > 1 the layer
term joins the GPU work (lin + kv + attn + comm) by ``(layer^q + gpu^q)^(1/q)`` (eager
launches hidden behind long GPU work); the shipped q = 1 adds them (CUDA graphs).

``smoothmax(a, b) = (a^p + b^p)^(1/p)`` (p = ``smooth_p``) joins the memory-bound and
compute-bound regimes of the linear layers. Weight bytes are what one GPU reads in the
step: attention and dense-MLP projections, shared experts and router, the LM head, and
(for mixture-of-experts models) the routed experts the step's tokens touch -- on
average ``E x (1 - (1 - k/E)^T)`` of ``E`` experts for ``T`` tokens with top-``k``
routing, ``T`` padded to the step's CUDA-graph size -- scaled by ``moe`` when the experts
are quantized (the fused-MoE kernels ``moe`` was fitted on). FLOPs are
2 x active parameters per token, plus the LM head for each scheduled request; with 8-bit
activations (the checkpoint's ``quantization_config`` says so) the quantized layers run
at twice the 16-bit peak and the layers it leaves out, the router and the LM head at the
16-bit peak. Sliding-window and chunked attention layers read and attend only their
window (``StepShape._local_terms``); a TP group larger than a node pays an inter-node
NCCL all-reduce (``latency/nodes.py``). KV bytes
are each decoder's context plus its new token, and each prefill chunk's earlier
context plus its new tokens, less the context in blocks another running request also
holds (``StepBatch.shared_context``): requests sharing a prefix read the same physical
blocks at about the same time, so the repeats come from L2, not HBM (docs/calibration.md).

``samp`` is the sampler: when the model's default sampling filters the logits (its
``generation_config.json`` sets ``top_p`` or ``top_k``, which vLLM applies to requests
that set none), every scheduled request's full-vocabulary row of logits is sorted or
scanned, a cost per request proportional to the vocabulary, by a fixed set of eager
kernels per step (outside the CUDA graph). ``sampling`` (``--sampling``
plain, filtered or penalized) overrides what the architecture says. ``pen`` is the penalty
bookkeeping when the defaults set a repetition, presence or frequency penalty: a fixed
cost per step (the penalty kernels run eagerly, and boolean-mask indexing synchronises
the CPU with the GPU) plus a cost per context token of the scheduled requests (their
prompt and output token ids are rebuilt into padded tensors on the CPU)::

    pen   = [penalties] x (penalty_us + penalty_token_us x context tokens)

Client-side overheads (everything the load tool measures outside the engine):

* ``queue_us + queue_per_token_us x prompt tokens`` from arrival to the engine's wait
  queue (HTTP, request parsing, tokenisation);
* with ``async_scheduling`` (vLLM v0.15.1's default) the engine forms step N+1 while
  step N runs: the model sets ``async_scheduling`` and the instance applies the lag
  (a request that reaches the engine while a step runs is first scheduled in the step
  after the next; a finished request's slot is reused one step later; docs/engine.md);
* ``output_token_us`` per output token (detokenisation and streaming), added to TTFT
  and to every inter-token sample as the simulator's per-token overhead.

Decode is priced from the batch totals (decoders D and their context sum ΣS), prefill
from the listed requests, so the fast stepper's unlisted decoders cost O(1).
"""

from __future__ import annotations

import json
import logging
import math
import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from inference_sim.catalog.architecture import ModelArchitecture
from inference_sim.catalog.schema import GpuSpec
from inference_sim.core.inputs import load_json, load_yaml, read_text
from inference_sim.core.request import Request
from inference_sim.latency.base import StepBatch
from inference_sim.latency.blackbox import LatencyConfigError
from inference_sim.latency.nodes import (
    INTER_NODE_ALLREDUCE_US,
    gpus_per_node,
    node_network_gbs,
    spans_nodes,
    warn_spans_nodes,
)
from inference_sim.latency.roofline import _decode_totals, round_half_away

__all__ = [
    "COEFFICIENT_FIELDS",
    "FITTED_FIELDS",
    "NO_CORRECTION",
    "RECORD_WIDTH",
    "SAMPLING_MODES",
    "CalibratedCoefficients",
    "CalibratedLatencyModel",
    "GpuCorrection",
    "StepShape",
    "clock_layer_factor",
    "cuda_graph_tokens",
    "default_coefficients",
    "filtered_sampling",
    "gpu_correction",
    "interconnect",
    "kernel_family",
    "load_coefficients",
    "penalized_sampling",
]

#: Per-direction GPU-to-GPU bandwidth (GB/s) and all-reduce latency factor by GPU.
#: NVLink parts use vLLM's custom all-reduce (latency factor 1, what the training runs
#: measured on H100); PCIe-only parts fall back to NCCL over PCIe (no peer NVLink), whose
#: small-message all-reduce is several times slower -- the factor 3 is an assumption,
#: not a measurement. Unknown GPUs get NVLink-class figures.
_INTERCONNECT: dict[str, tuple[float, float]] = {
    "H100": (450.0, 1.0),
    "H200": (450.0, 1.0),
    "B200": (900.0, 1.0),
    "A100-SXM": (300.0, 1.0),
    "A100-40GB": (300.0, 1.0),
    "H100-PCIe": (64.0, 3.0),  # PCIe Gen5 x16 (an NVLink bridge is optional)
    "MI300X": (448.0, 1.0),
    "L40S": (32.0, 3.0),
    "L4": (32.0, 3.0),
    "A10G": (32.0, 3.0),
}
_DEFAULT_INTERCONNECT = (300.0, 1.0)
#: GPUs with FP8 tensor cores: FP8 (W8A8) checkpoints run their GEMMs at twice the
#: BF16 peak there.
_FP8_GPUS = frozenset({"H100", "H100-PCIe", "H200", "B200", "L40S", "L4", "MI300X"})
#: GPUs with INT8 tensor (matrix) cores at twice the BF16 rate (every GPU of the catalog,
#: Ampere included): INT8 W8A8 checkpoints (``quantized.w8a8``: compressed-tensors INT8
#: weights and per-token INT8 activations, vLLM's CUTLASS ``scaled_mm``) run there at 2x.
_INT8_GPUS = frozenset(
    {"A100-SXM", "A100-40GB", "A10G", "L4", "L40S", "H100", "H100-PCIe", "H200", "B200", "MI300X"}
)


#: The GEMM and attention kernel generation vLLM runs on each GPU. Ada (L40S, L4) and
#: Ampere (A100, A10G) run the same sm80-class kernels (``mma.sync`` tensor-core GEMMs
#: from cuBLAS/CUTLASS, FlashAttention-2); Hopper runs its own (``wgmma``/TMA GEMMs,
#: FlashAttention-3). A GPU without measurements borrows the measured efficiencies of a
#: profiled GPU of its generation: how far kernels get from the datasheet is a property
#: of the kernels as much as of the chip (docs/calibration.md#per-gpu-efficiencies).
_KERNEL_FAMILY: dict[str, str] = {
    "H100": "sm90",
    "H100-PCIe": "sm90",
    "H200": "sm90",
    "A100-SXM": "sm80",
    "A100-40GB": "sm80",
    "A10G": "sm80",
    "L40S": "sm80",
    "L4": "sm80",
    "B200": "sm100",
    "MI300X": "cdna3",
}
#: Maximum boost clock (MHz) from each vendor's datasheet or whitepaper: H100 SXM5 and
#: H200 (the same GH100 die) 1980, H100 PCIe 1755, A100 SXM4 (80 and 40 GB) 1410 (NVIDIA
#: A100 whitepaper), L40S 2520
#: (L40S product brief), L4 2040 (L4 product brief), A10G 1710 (AWS G5 documentation).
#: Small per-layer kernels at decode sizes are latency-bound, so their time scales with
#: the inverse clock: the rule gives the A100 1980/1410 = 1.40 x the H100's time, where
#: Vidur's profiles measure 1.36. B200 and MI300X are left out (no figure we trust).
_BOOST_CLOCK_MHZ: dict[str, float] = {
    "H100": 1980.0,
    "H200": 1980.0,
    "A100-SXM": 1410.0,
    "A100-40GB": 1410.0,
    "H100-PCIe": 1755.0,
    "L40S": 2520.0,
    "L4": 2040.0,
    "A10G": 1710.0,
}


def interconnect(gpu_name: str) -> tuple[float, float]:
    """(link bandwidth GB/s per direction, all-reduce latency factor) for a GPU name."""
    return _INTERCONNECT.get(gpu_name, _DEFAULT_INTERCONNECT)


def kernel_family(gpu_name: str) -> str | None:
    """The kernel generation vLLM runs on a GPU (``sm80``, ``sm90``, ...), if known."""
    return _KERNEL_FAMILY.get(gpu_name)


def clock_layer_factor(gpu_name: str, ref_name: str = "H100") -> float:
    """Small-kernel time on ``gpu_name`` relative to ``ref_name`` (inverse boost clocks;
    1.0 when either clock is unknown)."""
    gpu, ref = _BOOST_CLOCK_MHZ.get(gpu_name), _BOOST_CLOCK_MHZ.get(ref_name)
    return ref / gpu if gpu and ref else 1.0


# --------------------------------------------------------------------------- per-GPU


@dataclass(frozen=True)
class GpuCorrection:
    """How a GPU's measured efficiencies differ from the H100's (1.0: as the H100).

    The coefficients were fitted on H100 runs, so ``weight_read`` and ``compute`` hold the
    H100's efficiency; another GPU's bandwidth and FLOP/s are scaled by the ratio of its
    measured GEMM efficiency to the H100's, and its all-reduce by the ratio of measured
    NCCL latencies and bus bandwidths (``catalog/data/gpu-efficiency.json``, fitted by
    ``scripts/calibration_logo.py`` from Vidur's operator and collective profiles).
    """

    bandwidth: float = 1.0  # x datasheet bandwidth, relative to the H100's fraction
    compute: float = 1.0  # x datasheet FLOP/s, relative to the H100's fraction
    allreduce_latency: float = 1.0  # x the all-reduce latency factor of the interconnect
    link_gbs: float = 0.0  # effective link bandwidth for all-reduce bytes (0: datasheet)
    #: x ``layer_us``: the GPU's small per-layer kernels (norms, rotary, activation,
    #: residual adds) at decode sizes, relative to the H100's.
    layer: float = 1.0
    #: Per TP degree as measured: (TP, latency factor like ``allreduce_latency``, bus GB/s
    #: or 0 for the datasheet link). A TP degree listed here overrides the two TP-flat
    #: figures above.
    allreduce_tp: tuple[tuple[int, float, float], ...] = ()
    measured: bool = False
    source: str = ""

    def allreduce(self, tp: int) -> tuple[float, float]:
        """(latency factor, bus GB/s or 0 for the datasheet link) at ``tp`` GPUs."""
        for n, lat, bus in self.allreduce_tp:
            if n == tp:
                return lat, bus or self.link_gbs
        return self.allreduce_latency, self.link_gbs


#: No correction: the GPU is priced by its datasheet with the H100's efficiencies.
NO_CORRECTION = GpuCorrection()
GPU_EFFICIENCY_PATH = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "catalog", "data", "gpu-efficiency.json"
)
_CORRECTIONS: dict[str, GpuCorrection] | None = None
#: The GPU the shipped coefficients were fitted on (``gpu-efficiency.json``).
_REFERENCE_GPU = "H100"


def _load_corrections() -> dict[str, GpuCorrection]:
    global _CORRECTIONS, _REFERENCE_GPU
    if _CORRECTIONS is None:
        out: dict[str, GpuCorrection] = {}
        if os.path.exists(GPU_EFFICIENCY_PATH):
            with open(GPU_EFFICIENCY_PATH, encoding="utf-8") as fh:
                doc = json.load(fh)
            _REFERENCE_GPU = str(doc["reference_gpu"])
            out = corrections_from_efficiency(doc["gpus"], _REFERENCE_GPU)
        _CORRECTIONS = out
    return _CORRECTIONS


def corrections_from_efficiency(
    gpus: Mapping[str, Mapping[str, Any]], ref_name: str
) -> dict[str, GpuCorrection]:
    """Per-GPU corrections from measured efficiencies (``gpu-efficiency.json``'s ``gpus``).

    Bandwidth, FLOP/s and small-kernel time are ratios to the reference GPU's (the H100's
    end-to-end fit holds its efficiencies). All-reduce latency per TP degree is the
    measured latency over the reference GPU's TP-median latency (so ``allreduce_us`` is
    the reference GPU's typical latency and the measured TP dependence stays in), and the
    bus bandwidth per TP degree is used as measured. Under the key ``"*"`` comes the
    correction for GPUs without measurements: the reference GPU's all-reduce latency
    shape over TP (NVLink or PCIe factor from :func:`interconnect` on top), everything
    else from the datasheet.
    """
    ref = gpus[ref_name]
    ref_lat = float(ref["allreduce_latency_us"])
    ref_link = interconnect(ref_name)[0]
    ref_small = float(ref.get("layer_ops_us") or 0.0)
    out: dict[str, GpuCorrection] = {}
    for name, g in gpus.items():
        per_tp = tuple(
            (int(n), float(v["latency_us"]) / ref_lat, float(v["bus_gbs"]))
            for n, v in sorted((g.get("allreduce_by_tp") or {}).items(), key=lambda kv: int(kv[0]))
        )
        small = float(g.get("layer_ops_us") or 0.0)
        out[name] = GpuCorrection(
            bandwidth=g["bandwidth"] / ref["bandwidth"],
            compute=g["compute"] / ref["compute"],
            allreduce_latency=g["allreduce_latency_us"] / ref_lat,
            link_gbs=0.0
            if name == ref_name
            else ref_link * g["allreduce_bus_gbs"] / ref["allreduce_bus_gbs"],
            layer=small / ref_small if small > 0 and ref_small > 0 else 1.0,
            allreduce_tp=per_tp,
            measured=True,
            source=str(g.get("data", "")),
        )
    if ref_name in out:
        out["*"] = GpuCorrection(
            allreduce_tp=tuple((n, lat, 0.0) for n, lat, _bus in out[ref_name].allreduce_tp)
        )
    return out


def gpu_correction(gpu_name: str) -> GpuCorrection:
    """The measured correction of a GPU (canonical name).

    A GPU nobody profiled keeps its datasheet figures, with the bandwidth and FLOP/s
    efficiencies of a profiled GPU of its kernel generation (:func:`kernel_family`; the
    H100's when there is none), that GPU's small-kernel factor scaled by the two boost
    clocks (:func:`clock_layer_factor`), and that GPU's measured all-reduce when both have
    the same links (A100 40 GB and 80 GB), else the reference GPU's latency over TP.
    :data:`NO_CORRECTION` without a ``gpu-efficiency.json``.
    """
    known = _load_corrections()
    if gpu_name in known and gpu_name != "*":
        return known[gpu_name]
    if not known:
        return NO_CORRECTION
    fallback = known.get("*", NO_CORRECTION)
    family = kernel_family(gpu_name)
    sibling = next(
        (
            name
            for name in sorted(known)
            if name != "*" and family is not None and kernel_family(name) == family
        ),
        None,
    )
    layer = clock_layer_factor(gpu_name, _REFERENCE_GPU)
    clock = f"small kernels x{layer:.2f} by boost clock" if layer != 1.0 else ""
    if sibling is None:
        own = f"datasheet figures with the {_REFERENCE_GPU}'s efficiencies"
        return replace(fallback, layer=layer, source=own + (f" ({clock})" if clock else ""))
    sib = known[sibling]
    # Small kernels: the sibling's measured factor, scaled by the two boost clocks.
    layer = sib.layer * clock_layer_factor(gpu_name, sibling)
    clock = f"small kernels x{layer:.2f} by boost clock" if layer != 1.0 else ""
    borrowed = f"datasheet with {sibling}'s measured efficiencies ({family} kernels)"
    base = fallback
    if interconnect(gpu_name) == interconnect(sibling):  # the same links: its collectives
        base = replace(sib, measured=False)
        borrowed += " and all-reduce"
    return replace(
        base,
        bandwidth=sib.bandwidth,
        compute=sib.compute,
        layer=layer,
        source="; ".join(filter(None, (borrowed, clock))),
    )


# --------------------------------------------------------------------------- coefficients


@dataclass(frozen=True)
class CalibratedCoefficients:
    """The fitted corrections and overheads (units in the names; multipliers are 1 = ideal)."""

    weight_read: float = 1.0  # x time to stream the weights at peak bandwidth
    compute: float = 1.56  # x time of the GEMM FLOPs at peak (1 / MFU)
    kv_read: float = 1.15  # x time to move the KV bytes at peak bandwidth
    attention: float = 2.0  # x time of the prefill attention FLOPs at peak
    moe: float = 1.0  # extra factor on routed-expert weight bytes
    allreduce_us: float = 8.0  # per all-reduce at small size (two per layer, TP > 1)
    step_us: float = 200.0  # fixed per step
    layer_us: float = 25.0  # fixed per layer per step
    #: Per TP worker per step at TP > 1 (vLLM's multiprocessing executor hands every step
    #: to each worker process and gathers the result); 0 = not modelled (fits before it).
    worker_us: float = 0.0
    request_us: float = 3.0  # per request scheduled in the step
    sampler_us: float = 10.0  # per request per 100k vocabulary entries (filtered sampling)
    #: Per step with filtered sampling: the sort/scan path's fixed kernel cost, whatever
    #: the batch (vLLM's top-p/top-k sampler runs eagerly, outside CUDA graphs); 0 = not
    #: modelled (fits before it).
    sampler_step_us: float = 0.0
    penalty_us: float = 200.0  # per step when sampling applies repetition/presence penalties
    penalty_token_us: float = 0.03  # per context token of the scheduled requests (penalties)
    queue_us: float = 5000.0  # arrival -> engine wait queue (client, HTTP, parsing)
    queue_per_token_us: float = 2.0  # tokenisation, per prompt token
    output_token_us: float = 5.0  # per output token (detokenisation, streaming)
    async_scheduling: bool = True  # the engine forms batches a step ahead (vLLM v0.15.1 default)
    smooth_p: float = 1.4  # smooth-max exponent joining memory- and compute-bound GEMMs
    #: Smooth-max exponent joining the per-layer fixed cost (``layer_us``) with the step's
    #: GPU work: 1 adds them (CUDA graphs: the per-layer cost is GPU kernel time, run in
    #: series with the GEMMs -- vLLM v0.15.1), large values take their maximum (eager
    #: launches: the host issues a layer's kernels while the GPU runs earlier ones, so a
    #: long prefill hides them). Fixed, not fitted, in ``blis calibrate``.
    overlap: float = 1.0
    #: Free text: where the numbers come from.
    source: str = ""
    #: Anything else recorded with the fit (data, date, command, errors).
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in COEFFICIENT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise LatencyConfigError(f"calibrated: {name} must be a finite number, got {v!r}")
            if v < 0:
                raise LatencyConfigError(f"calibrated: {name} must be >= 0, got {v}")
        for name in ("weight_read", "compute", "kv_read", "attention", "moe"):
            if getattr(self, name) <= 0:
                raise LatencyConfigError(f"calibrated: {name} must be > 0")
        if self.smooth_p < 1:
            raise LatencyConfigError(f"calibrated: smooth_p must be >= 1, got {self.smooth_p}")
        if self.overlap < 1:
            raise LatencyConfigError(f"calibrated: overlap must be >= 1, got {self.overlap}")

    def with_values(self, values: Mapping[str, float]) -> CalibratedCoefficients:
        return replace(self, **{k: float(v) for k, v in values.items()})

    def vector(self, names: Sequence[str] = ()) -> list[float]:
        return [float(getattr(self, n)) for n in (names or FITTED_FIELDS)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        if not d["source"]:
            d.pop("source")
        return d

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], where: str = "") -> CalibratedCoefficients:
        """Coefficients from a mapping; unknown keys are an error, missing ones default."""
        label = f"{where}: " if where else ""
        if not isinstance(doc, Mapping):
            raise LatencyConfigError(f"{label}expected a mapping of coefficient names")
        doc = {k: v for k, v in doc.items() if k != "format"}
        if "coefficients" in doc and isinstance(doc["coefficients"], Mapping):
            extra = {k: v for k, v in doc.items() if k != "coefficients"}
            merged = dict(doc["coefficients"])
            for key in ("source", "meta"):
                if key in extra and key not in merged:
                    merged[key] = extra.pop(key)
            if extra:
                meta = dict(merged.get("meta") or {})
                meta.update({k: v for k, v in extra.items() if k != "format"})
                merged["meta"] = meta
            doc = merged
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise LatencyConfigError(
                f"{label}unknown coefficient(s) {', '.join(unknown)}; known: "
                + ", ".join(sorted(known))
            )
        kwargs: dict[str, Any] = {}
        for key, value in doc.items():
            if key in ("source",):
                kwargs[key] = str(value or "")
            elif key == "meta":
                kwargs[key] = dict(value or {})
            elif key == "async_scheduling":
                if not isinstance(value, bool | int | float):
                    raise LatencyConfigError(f"{label}async_scheduling must be true or false")
                kwargs[key] = bool(value)
            else:
                try:
                    kwargs[key] = float(value)
                except (TypeError, ValueError):
                    raise LatencyConfigError(
                        f"{label}{key} must be a number, got {value!r}"
                    ) from None
        try:
            return cls(**kwargs)
        except LatencyConfigError as exc:
            raise LatencyConfigError(f"{label}{exc}") from None


#: Numeric coefficients (validated >= 0).
COEFFICIENT_FIELDS: tuple[str, ...] = (
    "weight_read",
    "compute",
    "kv_read",
    "attention",
    "moe",
    "allreduce_us",
    "step_us",
    "layer_us",
    "worker_us",
    "request_us",
    "sampler_us",
    "sampler_step_us",
    "penalty_us",
    "penalty_token_us",
    "queue_us",
    "queue_per_token_us",
    "output_token_us",
    "smooth_p",
    "overlap",
)
#: The coefficients ``blis calibrate`` fits (smooth_p, overlap and async_scheduling are
#: fixed).
FITTED_FIELDS: tuple[str, ...] = COEFFICIENT_FIELDS[:-2]

_DATA_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "catalog", "data")
DEFAULT_COEFFICIENTS_PATH = os.path.join(_DATA_FILE, "calibrated.json")


def load_coefficients(path: str | os.PathLike[str]) -> CalibratedCoefficients:
    """A coefficients file (JSON or YAML): a mapping of names, or ``{coefficients: {...}}``."""
    where = os.fspath(path)
    try:
        text = read_text(path)
    except UnicodeDecodeError:
        raise LatencyConfigError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise LatencyConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = load_json(text)
    except ValueError:
        import yaml

        try:
            doc = load_yaml(text)
        except yaml.YAMLError as exc:
            raise LatencyConfigError(f"{where}: neither JSON nor YAML: {exc}") from None
    if not isinstance(doc, Mapping) or not doc:
        got = type(doc).__name__ if doc not in (None, "") else "an empty file"
        raise LatencyConfigError(
            f"{where}: expected a mapping of coefficient names to numbers"
            f" (as `blis calibrate --out` writes it), got {got}"
        )
    coeffs = CalibratedCoefficients.from_mapping(doc, where)
    if os.path.abspath(where) == os.path.abspath(DEFAULT_COEFFICIENTS_PATH):
        return coeffs
    inner = doc.get("coefficients") if isinstance(doc.get("coefficients"), Mapping) else doc
    missing = [name for name in COEFFICIENT_FIELDS if name not in inner]
    if missing:
        # A hand-written file overriding a few coefficients: the rest are the shipped
        # set's, not the built-in priors (which no run was fitted with).
        shipped = default_coefficients()
        coeffs = replace(coeffs, **{name: getattr(shipped, name) for name in missing})
        logging.getLogger("inference_sim").warning(
            "%s gives no %s; using the shipped coefficients' values", where, ", ".join(missing)
        )
    return coeffs


_DEFAULT: CalibratedCoefficients | None = None


def default_coefficients() -> CalibratedCoefficients:
    """The shipped set (``catalog/data/calibrated.json``); built-in priors if it is missing."""
    global _DEFAULT
    if _DEFAULT is None:
        if os.path.exists(DEFAULT_COEFFICIENTS_PATH):
            _DEFAULT = load_coefficients(DEFAULT_COEFFICIENTS_PATH)
        else:  # pragma: no cover - the file ships with the package
            _DEFAULT = CalibratedCoefficients(source="built-in priors (no calibrated.json)")
    return _DEFAULT


# --------------------------------------------------------------------------- shape


#: ``sampling`` values: the architecture's generation defaults, or forced on / off.
SAMPLING_MODES = ("auto", "plain", "filtered", "penalized")


def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLING_MODES:
        raise LatencyConfigError(
            f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}"
        )


def filtered_sampling(arch: ModelArchitecture, sampling: str = "auto") -> bool:
    """Whether requests are sampled with a top-p/top-k filter (``sampling`` overrides)."""
    _check_sampling(sampling)
    if sampling != "auto":
        return sampling in ("filtered", "penalized")
    return arch.generation is not None and arch.generation.filters


def penalized_sampling(arch: ModelArchitecture, sampling: str = "auto") -> bool:
    """Whether sampling applies repetition/presence/frequency penalties (``sampling``
    ``penalized`` forces them on, ``plain`` and ``filtered`` off)."""
    _check_sampling(sampling)
    if sampling != "auto":
        return sampling == "penalized"
    return arch.generation is not None and arch.generation.penalizes


#: Largest batch vLLM captures a CUDA graph for; bigger steps run eagerly. vLLM's default
#: cap is min(2 x max_num_seqs, 512, max_num_batched_tokens): 512 from max_num_seqs 256 (its
#: default). With fewer sequences the real cap is lower, which only unpads steps of
#: 2 x max_num_seqs..512 tokens, where every routed expert is touched anyway.
MAX_CUDA_GRAPH_TOKENS = 512


def cuda_graph_tokens(tokens: int) -> int:
    """Tokens a step of ``tokens`` runs with: vLLM's default CUDA-graph capture sizes
    (1, 2, 4, then multiples of 8 up to 256 and of 16 up to 512); larger steps unpadded."""
    if tokens <= 2 or tokens > MAX_CUDA_GRAPH_TOKENS:
        return tokens
    if tokens <= 4:
        return 4
    step = 8 if tokens <= 256 else 16
    return -(-tokens // step) * step


#: Kernels in one dense decoder layer of vLLM 0.15 under CUDA graphs, the layer
#: ``layer_us`` prices: two fused add-RMSNorms, rotary embedding, KV-cache write,
#: attention, activation and the four projection GEMMs (QKV, output, gate-up, down).
DENSE_LAYER_KERNELS = 10
#: Kernels a mixture-of-experts layer runs beyond a dense one (vLLM's fused-MoE path, a
#: custom op that torch.compile does not fuse into): router GEMM, top-k selection, the
#: token-to-expert sort (``moe_align_block_size``) and the combine of the experts' outputs.
MOE_ROUTING_KERNELS = 4
#: FP8/INT8-activation experts quantize the tokens before each of the two grouped GEMMs.
MOE_ACTIVATION_QUANT_KERNELS = 2
#: A shared expert runs inside the same op: two GEMMs, its activation and the add into
#: the routed output (plus two activation quantizations when its weights are FP8/INT8).
SHARED_EXPERT_KERNELS = 4


def moe_extra_kernels(arch: ModelArchitecture, quantized_activations: bool) -> int:
    """Kernels each MoE layer of ``arch`` runs beyond a dense layer (0 for dense models).

    Why it matters: at decode sizes every kernel costs a few µs of launch tail whatever
    its bytes, which ``layer_us`` prices per dense layer; an MoE layer runs more of them
    (routing, sorting, combining, quantizing), a cost per step that does not grow with
    the batch, unlike the touched experts' weights.
    """
    moe = arch.moe
    if moe is None:
        return 0
    q = arch.quantization
    scope = q.scope if q is not None else ""
    kernels = MOE_ROUTING_KERNELS
    if quantized_activations:
        kernels += MOE_ACTIVATION_QUANT_KERNELS
    if moe.shared_ffn > 0:
        kernels += SHARED_EXPERT_KERNELS
        if quantized_activations and scope in ("linear", "mlp"):
            kernels += 2
    return kernels


def _gemm_dtype(arch: ModelArchitecture) -> str:
    """What an 8-bit checkpoint's quantized GEMMs compute in: ``fp8``, ``int8`` or ``""``.

    The checkpoint's ``quantization_config`` decides (``WeightQuantization.activations``,
    read from ``config.json``; bundled entries carry it too): the same config is priced
    the same whatever ``--model`` spells. Only a record that does not say (built by hand)
    falls back to the model id: ``fp8`` in it means FP8 W8A8 (RedHatAI's
    ``-FP8-dynamic``), ``w8a8`` without ``fp8`` INT8 W8A8 (``quantized.w8a8``).
    """
    q = arch.quantization
    if q is None:
        return ""
    dtype = q.gemm_dtype
    if dtype != "?":
        return dtype
    name = arch.name.lower()
    if "fp8" in name:
        return "fp8"
    return "int8" if "w8a8" in name else ""


class StepShape:
    """Per-GPU sizes of one model on one GPU at one TP degree (bytes, FLOPs, seconds)."""

    def __init__(
        self,
        arch: ModelArchitecture,
        gpu: GpuSpec,
        tp: int,
        sampling: str = "auto",
        correction: GpuCorrection | None = None,
    ) -> None:
        if isinstance(tp, bool) or not isinstance(tp, int) or tp <= 0:
            raise LatencyConfigError(f"calibrated: --tp must be an integer > 0, got {tp!r}")
        for what, value in (
            ("layers", arch.layers),
            ("hidden size", arch.hidden),
            ("attention heads", arch.heads),
            ("bytes per parameter", arch.dtype_bytes),
        ):
            if not (math.isfinite(float(value)) and value > 0):
                raise LatencyConfigError(f"calibrated: model {what} must be > 0, got {value}")
        for what, value in (
            ("peak TFLOP/s", gpu.peak_tflops),
            ("peak bandwidth (TB/s)", gpu.peak_bandwidth_tbs),
        ):
            if not (math.isfinite(value) and value > 0):
                raise LatencyConfigError(f"calibrated: {gpu.name} {what} must be > 0")
        self.tp = tp
        self.layers = arch.layers
        self.filtered_sampling = filtered_sampling(arch, sampling)
        self.penalized_sampling = penalized_sampling(arch, sampling)
        # Every rank samples from the full (all-gathered) vocabulary.
        self.sampler_units = float(arch.vocab) / 1e5 if self.filtered_sampling else 0.0
        corr = gpu_correction(gpu.name) if correction is None else correction
        self.correction = corr
        self.bw = gpu.peak_bandwidth_tbs * 1e12 * corr.bandwidth  # bytes/s
        self.peak = gpu.peak_tflops * 1e12 * corr.compute  # BF16 dense FLOP/s
        link_gbs, link_latency = interconnect(gpu.name)
        ar_latency, ar_gbs = corr.allreduce(tp)
        self.link_latency = link_latency * ar_latency
        self.link_bw = (ar_gbs or link_gbs) * 1e9
        #: Seconds of one all-reduce's latency that ``allreduce_us`` does not scale.
        self.inter_node_latency_s = 0.0
        #: A TP group larger than a node (``latency/nodes.py``): every all-reduce crosses
        #: the network, as NCCL (vLLM's custom all-reduce, which ``allreduce_us`` prices,
        #: runs within a node only), at the measured inter-node NCCL latency; the bus
        #: bandwidth is the node's network or its own ring at a full node, the slower.
        #: One node's figures would make TP 16 faster than TP 8 at any batch.
        self.spans_nodes = spans_nodes(gpu.name, tp)
        if self.spans_nodes:
            node = gpus_per_node(gpu.name)
            node_gbs = corr.allreduce(node)[1] or link_gbs
            self.link_latency = 0.0
            self.inter_node_latency_s = INTER_NODE_ALLREDUCE_US * 1e-6
            self.link_bw = min(node_gbs, node_network_gbs(gpu.name)) * 1e9
            warn_spans_nodes(gpu.name, tp, arch.name)
        self.layer_factor = corr.layer
        d = float(arch.hidden)
        bpp = float(arch.dtype_bytes)
        q = arch.quantization
        scoped: tuple[str, ...] = ()
        if q is not None:
            scoped = {
                "linear": ("attention", "dense_mlp", "shared", "experts"),
                "mlp": ("dense_mlp", "shared", "experts"),
                "experts": ("experts",),
            }[q.scope]

        def stored(group: str) -> float:
            return q.bytes_per_param if q is not None and group in scoped else bpp

        p = arch.param_breakdown()
        lm_head = float(arch.vocab) * d
        # Weight bytes every step reads (per GPU), routed experts apart.
        self.dense_bytes = (
            p["attention"] * stored("attention")
            + p["dense_mlp"] * stored("dense_mlp")
            + p["shared"] * stored("shared")
            + p["router"] * bpp
            + lm_head * bpp
        ) / tp
        moe = arch.moe
        self.experts = moe.experts if moe else 0
        self.top_k = moe.top_k if moe else 0
        self.moe_layers = moe.moe_layers if moe else 0
        per_expert = 3.0 * d * float(moe.expert_ffn) if moe else 0.0
        self.expert_bytes = per_expert * stored("experts") * self.moe_layers / tp  # one expert
        # Quantized experts (FP8/INT8/INT4) run vLLM's quantized fused-MoE kernels, the only
        # ones the end-to-end data measured (Llama-4-Scout FP8): ``moe`` prices those.
        # 16-bit experts stream like the dense GEMMs (``weight_read`` alone).
        self.quantized_experts = moe is not None and "experts" in scoped
        # GEMM FLOPs per token (per GPU): 2 x active parameters, LM head apart.
        active_by_group = {
            "attention": float(p["attention"]),
            "dense_mlp": float(p["dense_mlp"]),
            "shared": float(p["shared"]),
            "router": float(p["router"]),
            "experts": self.moe_layers * moe.top_k * per_expert if moe is not None else 0.0,
        }
        active = p["attention"] + p["dense_mlp"] + p["shared"] + p["router"]
        if moe is not None:
            active += self.moe_layers * moe.top_k * per_expert
        self.flops_per_token = 2.0 * active / tp
        self.flops_per_request = 2.0 * lm_head / tp  # logits of the last position
        # 8-bit activations (W8A8: FP8 or INT8) double the GEMM peak on GPUs with the
        # matching tensor cores, for the quantized layers only: vLLM runs the layers a
        # checkpoint leaves out (attention in Llama-4-Scout FP8, everything but the routed
        # experts in Maverick FP8, the router and LM head always) as 16-bit GEMMs.
        # Weight-only quantization computes at 16 bits.
        gemm_dtype = _gemm_dtype(arch) if q is not None and q.bytes_per_param == 1.0 else ""
        quantized_gemms = bool(gemm_dtype) and gpu.name in (
            _INT8_GPUS if gemm_dtype == "int8" else _FP8_GPUS
        )
        self.gemm_dtype = gemm_dtype if quantized_gemms else ""
        self.gemm_peak = self.peak * (2.0 if quantized_gemms else 1.0)
        #: The part of ``flops_per_token`` that runs at ``gemm_peak`` (the quantized
        #: layers); the rest, and the LM head, run at the 16-bit ``peak``.
        self.quantized_flops_per_token = (
            2.0 * sum(v for g, v in active_by_group.items() if g in scoped) / tp
            if quantized_gemms
            else 0.0
        )
        # Per-layer fixed cost in dense-layer units: MoE layers run more small kernels.
        self.layer_units = float(arch.layers) + self.moe_layers * (
            moe_extra_kernels(arch, quantized_gemms and self.quantized_experts)
            / DENSE_LAYER_KERNELS
        )
        # Attention.
        if arch.mla is not None:
            qk = float(arch.mla.qk_nope_head_dim + arch.mla.qk_rope_head_dim)
            v = float(arch.mla.v_head_dim)
        else:
            qk = v = float(arch.kv_head_dim)
        heads_gpu = max(1.0, float(arch.heads) / tp)
        self.attn_flops_coef = 2.0 * heads_gpu * (qk + v) * float(arch.layers)  # x n x S_eff
        self.kv_tok = arch.kv_bytes_per_token(tp)
        # Sliding-window / chunked local attention (gpt-oss, Llama-4, Mistral-7B-v0.1): in
        # those layers a decoder reads at most the window of KV and a prefill token
        # attends only its window or chunk. Their share of the layers splits the KV and
        # attention terms; the global layers keep the whole context.
        self.local = arch.local_attention
        local_share = self.local.layers / arch.layers if self.local is not None else 0.0
        self.local_kv_tok = self.kv_tok * local_share
        self.local_attn_coef = self.attn_flops_coef * local_share
        # All-reduce payload per token (activations, 16-bit) and ring factor.
        self.ar_bytes_per_token = d * 2.0 * (2.0 * (tp - 1) / tp) if tp > 1 else 0.0

    def touched_experts(self, tokens: int) -> float:
        """Expected distinct routed experts per MoE layer for a step of ``tokens`` tokens.

        The step runs at its CUDA-graph size (:func:`cuda_graph_tokens`): the padding
        slots hold stale token ids from earlier steps, which the router sends to experts
        like real tokens.
        """
        if not self.experts or tokens <= 0:
            return 0.0
        e = float(self.experts)
        return e * (1.0 - (1.0 - min(1.0, self.top_k / e)) ** cuda_graph_tokens(tokens))

    def raw(
        self,
        prefill: Iterable[tuple[int, int]],
        count: int,
        context_sum: int,
        shared: int = 0,
    ) -> tuple[float, float, float, float, float, float, int, float]:
        """The step's raw quantities, coefficient-free (all per GPU, seconds at peak).

        Returns (dense weight s, routed-expert weight s, GEMM FLOP s, KV s, attention
        FLOP s, all-reduce bytes s, requests, context s). Tokens T = prefill tokens +
        ``count``. ``shared`` context tokens sit in blocks another request of the step
        also holds: the KV term reads them once (``StepBatch.shared_context``); the
        context term (penalty bookkeeping, per request on the CPU) counts every request's.
        """
        tokens = count
        requests = count
        kv_tokens = context_sum + count
        attn = 0.0
        for s, n in prefill:
            tokens += n
            requests += 1
            kv_tokens += s + n
            attn += n * (s + (n + 1) / 2.0)
        read = kv_tokens - shared if shared > 0 else kv_tokens
        if read < tokens:
            read = tokens  # the step's new tokens are never shared
        bw = self.bw
        w_dense = self.dense_bytes / bw
        w_exp = self.expert_bytes * self.touched_experts(tokens) / bw
        if self.quantized_flops_per_token:
            q = self.quantized_flops_per_token
            flops = (
                q * tokens / self.gemm_peak
                + ((self.flops_per_token - q) * tokens + self.flops_per_request * requests)
                / self.peak
            )
        else:
            flops = (self.flops_per_token * tokens + self.flops_per_request * requests) / self.peak
        ctx = self.kv_tok * kv_tokens / bw
        if self.local is None:
            kv = self.kv_tok * read / bw if read != kv_tokens else ctx
            att = self.attn_flops_coef * attn / self.peak
        else:
            local_read, local_attn = self._local_terms(prefill, count, context_sum)
            kv = ((self.kv_tok - self.local_kv_tok) * read + self.local_kv_tok * local_read) / bw
            att = (
                (self.attn_flops_coef - self.local_attn_coef) * attn
                + self.local_attn_coef * local_attn
            ) / self.peak
        ar = self.ar_bytes_per_token * tokens / self.link_bw
        return w_dense, w_exp, flops, kv, att, ar, requests, ctx

    def _local_terms(
        self, prefill: Iterable[tuple[int, int]], count: int, context_sum: int
    ) -> tuple[float, float]:
        """(KV tokens read, causal attention work) of one local-attention layer.

        Decoders are known by their totals only (D, ΣS): each reads at most its window
        (``min(S + 1, size)``; for a chunk, the part of its chunk so far), bounded here by
        ``min(ΣS + D, D x size)`` -- exact when every context is past the window (gpt-oss's
        128 tokens) or every one inside it (Llama-4's 8192-token chunks at shorter
        contexts), an upper bound in between. Prefill chunks are listed: exact. Shared
        prefix blocks are not discounted here: a window rarely reaches back to them.
        """
        local = self.local
        assert local is not None
        read = float(min(context_sum + count, count * local.size))
        attn = 0.0
        for s, n in prefill:
            read += local.context_read(s) + n
            attn += local.attended(s, n)
        return read, attn


#: Values recorded per step by a recording model: start µs, duration µs, then the
#: eight :meth:`StepShape.raw` values.
RECORD_WIDTH = 10


class CalibratedLatencyModel:
    """Step time from :class:`StepShape` terms and :class:`CalibratedCoefficients`."""

    name = "calibrated"

    def __init__(
        self,
        architecture: ModelArchitecture,
        gpu: GpuSpec,
        tp: int,
        coefficients: CalibratedCoefficients | Mapping[str, Any] | None = None,
        *,
        record: bool = False,
        sampling: str = "auto",
        correction: GpuCorrection | None = None,
    ) -> None:
        """``correction`` None: the GPU's measured correction (:func:`gpu_correction`)."""
        if coefficients is None:
            coefficients = default_coefficients()
        elif not isinstance(coefficients, CalibratedCoefficients):
            coefficients = CalibratedCoefficients.from_mapping(coefficients)
        self.architecture = architecture
        self.gpu = gpu
        self.tp = tp
        self.coefficients = c = coefficients
        self.sampling = sampling
        self.shape = sh = StepShape(architecture, gpu, tp, sampling, correction)
        self._p = c.smooth_p
        self._wr = c.weight_read
        self._moe = c.moe if sh.quantized_experts else 1.0
        self._cp = c.compute
        self._kv = c.kv_read
        self._att = c.attention
        comm_s = 0.0
        if tp > 1:
            comm_s = 2.0 * sh.layers * c.allreduce_us * sh.link_latency * 1e-6
            if sh.inter_node_latency_s:
                comm_s += 2.0 * sh.layers * sh.inter_node_latency_s
        self._comm_s = comm_s
        self._ar_per_s = 2.0 * sh.layers  # x all-reduce seconds of one layer's payload
        self._fixed_us = c.step_us + c.layer_us * sh.layer_factor * sh.layer_units
        if tp > 1 and c.worker_us:
            self._fixed_us += c.worker_us * tp
        # Host/GPU overlap of the per-layer cost (``overlap`` > 1): the layer term joins
        # the GPU work by a smooth max instead of adding to it; the step cost stays apart.
        self._q = c.overlap
        self._layers_us = c.layer_us * sh.layer_factor * sh.layer_units
        self._req_us = c.request_us + c.sampler_us * sh.sampler_units
        self._samp_step_us = c.sampler_step_us if sh.filtered_sampling else 0.0
        self._otp = round(c.output_token_us)
        self._decode_cache: dict[int, float] = {}
        # Penalties: a fixed cost per step and one per context token (µs per KV-second).
        pen = sh.penalized_sampling
        self._pen_us = c.penalty_us if pen else 0.0
        self._pen_per_kv_s = (
            c.penalty_token_us * sh.bw / sh.kv_tok if pen and sh.kv_tok > 0 else 0.0
        )
        # Per context token read: all layers, or the global layers' share with local
        # attention, whose layers add their window's reads (``_local_slope_us``).
        if sh.local is None:
            self._kv_slope_us = c.kv_read * sh.kv_tok / sh.bw * 1e6
        else:
            self._kv_slope_us = c.kv_read * (sh.kv_tok - sh.local_kv_tok) / sh.bw * 1e6
        self._local_slope_us = c.kv_read * sh.local_kv_tok / sh.bw * 1e6
        self._pen_slope_us = c.penalty_token_us if pen else 0.0  # per context token
        #: Read by the instance (instance/engine.py), which applies vLLM's async-scheduling
        #: lag step by step; the queueing time is the client overhead alone.
        self.async_scheduling = bool(c.async_scheduling)
        # End of the step in flight (µs) and its length (the recorded step starts).
        self._last_end = 0
        self._last_dur = 0
        self.record: array[float] | None = array("d") if record else None

    # ----------------------------------------------------------------- terms

    def _smooth(self, mem: float, cmp: float) -> float:
        p = self._p
        if p == 1.0:
            return mem + cmp
        if mem <= 0.0 or cmp <= 0.0:
            return mem + cmp
        hi = max(mem, cmp)
        return hi * (((mem / hi) ** p + (cmp / hi) ** p) ** (1.0 / p))

    def _combine(self, raw: tuple[float, float, float, float, float, float, int, float]) -> float:
        """Step time in µs (not rounded) from :meth:`StepShape.raw` values."""
        w_dense, w_exp, flops, kv, att, ar, requests, ctx = raw
        if requests == 0:
            return self._fixed_us
        mem = self._wr * (w_dense + self._moe * w_exp)
        lin = self._smooth(mem, self._cp * flops)
        comm = (self._comm_s + self._ar_per_s * ar) if self.tp > 1 else 0.0
        seconds = lin + self._kv * kv + self._att * att + comm
        pen = self._pen_us + self._pen_per_kv_s * ctx if self._pen_us or self._pen_per_kv_s else 0.0
        if self._q != 1.0:
            gpu_us = self._overlapped(seconds * 1e6)
            host = self._fixed_us - self._layers_us
            return gpu_us + host + self._req_us * requests + self._samp_step_us + pen
        return seconds * 1e6 + self._fixed_us + self._req_us * requests + self._samp_step_us + pen

    def _overlapped(self, gpu_us: float) -> float:
        """GPU work and the per-layer cost joined by the ``overlap`` smooth max (µs)."""
        host = self._layers_us
        hi = max(gpu_us, host)
        if hi <= 0.0:
            return 0.0
        q = self._q
        return hi * (((gpu_us / hi) ** q + (host / hi) ** q) ** (1.0 / q))

    def terms(
        self, prefill: Sequence[tuple[int, int]], count: int, context_sum: int, shared: int = 0
    ) -> dict[str, float]:
        """Each term of the step time in µs (for tests, docs and ``describe``)."""
        raw = self.shape.raw(prefill, count, context_sum, shared)
        w_dense, w_exp, flops, kv, att, ar, requests, ctx = raw
        mem = self._wr * (w_dense + self._moe * w_exp)
        cmp = self._cp * flops
        comm = (self._comm_s + self._ar_per_s * ar) if self.tp > 1 and requests else 0.0
        out = {
            "weights_us": mem * 1e6,
            "gemm_compute_us": cmp * 1e6,
            "linear_us": self._smooth(mem, cmp) * 1e6 if requests else 0.0,
            "kv_us": self._kv * kv * 1e6,
            "attention_us": self._att * att * 1e6,
            "allreduce_us": comm * 1e6,
            "step_us": self.coefficients.step_us,
            "layers_us": self._layers_us,
            "workers_us": self.coefficients.worker_us * self.tp if self.tp > 1 else 0.0,
            "requests_us": self.coefficients.request_us * requests,
            "sampler_us": (
                self.coefficients.sampler_us * self.shape.sampler_units * requests
                + (self._samp_step_us if requests else 0.0)
            ),
            "penalty_us": (self._pen_us + self._pen_per_kv_s * ctx) if requests else 0.0,
        }
        out["total_us"] = self._combine(raw)
        return out

    def step_time_from(
        self,
        prefill: Sequence[tuple[int, int]],
        decode_count: int,
        decode_context_sum: int,
        shared: int = 0,
    ) -> int:
        """Step time (µs) from the prefill requests' (S, n), the decode totals (D, ΣS) and
        the shared context tokens (``StepBatch.shared_context``)."""
        raw = self.shape.raw(prefill, decode_count, decode_context_sum, shared)
        return round_half_away(self._combine(raw))

    # ----------------------------------------------------------------- protocol

    def step_time(self, batch: StepBatch) -> int:
        start = self._last_end
        prefill: list[tuple[int, int]] = []
        if batch.requests:
            for req, n in zip(batch.requests, batch.num_new, strict=True):
                fst = req.first_scheduled_time
                if fst > start:
                    start = fst  # a request admitted in this step: the step starts now
                computed = req.num_computed_tokens
                if computed < req.prefill_target:
                    prefill.append((computed, n))
        count, total = _decode_totals(batch)
        rec = self.record
        if not prefill and rec is None and self._q == 1.0:
            base = self._decode_cache.get(count)
            if base is None:
                base = self._combine(self.shape.raw((), count, 0))
                self._decode_cache[count] = base
            if count:
                read = total - batch.shared_context
                if read < 0:
                    read = 0
                t = base + self._kv_slope_us * read + self._pen_slope_us * total
                local = self.shape.local
                if local is not None:  # the local layers' reads beyond the new tokens
                    t += self._local_slope_us * (min(total + count, count * local.size) - count)
                us = round_half_away(t)
            else:
                us = round_half_away(base)
        else:
            raw = self.shape.raw(prefill, count, total, batch.shared_context)
            us = round_half_away(self._combine(raw))
            if rec is not None:
                rec.extend((float(start), float(us), *raw))
        self._last_end = start + us
        self._last_dur = us
        return us

    def extend_last_step(self, extra_us: int) -> None:
        """The step just priced by :meth:`step_time` ran ``extra_us`` longer (speculative
        decoding's extra query tokens and drafting), so recorded step starts stay right."""
        self._last_end += extra_us
        self._last_dur += extra_us

    def queueing_time(self, req: Request) -> int:
        """Client-side time from arrival to the engine's wait queue (the async-scheduling
        lag after that is the instance's, see ``async_scheduling``)."""
        c = self.coefficients
        return int(c.queue_us + c.queue_per_token_us * float(req.num_prompt_tokens))

    def output_token_time(self) -> int:
        return self._otp

    def describe(self) -> dict[str, object]:
        return {
            "latency_model": self.name,
            "architecture": self.architecture.name,
            "gpu": self.gpu.name,
            "tp": self.tp,
            "filtered_sampling": self.shape.filtered_sampling,
            "penalized_sampling": self.shape.penalized_sampling,
            "gpu_correction": asdict(self.shape.correction),
            "coefficients": self.coefficients.to_dict(),
        }
