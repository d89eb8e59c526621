"""Immutable records handed out by :class:`~inference_sim.catalog.Catalog`.

They are frozen, slotted dataclasses because a loaded catalog is cached and
shared across the whole process: no caller may mutate what another one reads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoefficientSet", "GpuSpec", "ModelDefaults", "WorkloadPreset"]


@dataclass(frozen=True, slots=True)
class CoefficientSet:
    """Trained black-box latency coefficients for one deployment shape.

    A set is only valid for the exact (model, GPU, tensor parallelism, vLLM
    image) it was fitted on, which is why all four are part of the record.
    ``alpha`` holds the request-level terms and ``beta`` the per-step terms
    of the fitted model; ``total_kv_blocks`` is the KV-cache
    capacity observed for that deployment.  Only the owner of the latency
    model interprets the individual terms; the catalog just stores them.
    """

    model: str
    gpu: str
    tp: int
    vllm_version: str
    alpha: tuple[float, float, float]
    beta: tuple[float, float, float]
    total_kv_blocks: int


@dataclass(frozen=True, slots=True)
class ModelDefaults:
    """The deployment shape used for a model when the user does not pick one.

    ``hf_repo`` is the Hugging Face repository holding the model's config, or
    the empty string for models that have no public repository (those can only
    be simulated with coefficients or a local config folder).
    """

    gpu: str
    tp: int
    vllm_version: str
    hf_repo: str


@dataclass(frozen=True, slots=True)
class WorkloadPreset:
    """Token-length distribution parameters for a named synthetic workload.

    Prompt and output lengths are each described by a mean, a standard
    deviation and inclusive bounds, so that a workload generator can draw
    realistic, bounded lengths; ``prefix_tokens`` is the length of a prefix
    shared by every prompt (0 means none).
    """

    prefix_tokens: int
    prompt_tokens: int
    prompt_tokens_stdev: int
    prompt_tokens_min: int
    prompt_tokens_max: int
    output_tokens: int
    output_tokens_stdev: int
    output_tokens_min: int
    output_tokens_max: int


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Hardware figures consumed by the analytical (roofline) latency model.

    Units are part of the field names so that nobody has to guess whether an
    overhead is in microseconds or milliseconds.
    """

    name: str
    peak_tflops: float
    peak_bandwidth_tbs: float
    bandwidth_efficiency: float
    step_overhead_us: float
    per_layer_overhead_us: float
    mfu_prefill: float
    mfu_decode: float
    allreduce_latency_us: float
