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
    capacity recorded for that deployment, as the data file gives it: summed
    over the TP ranks (see :attr:`instance_kv_blocks`).  Only the owner of the
    latency model interprets the individual terms; the catalog just stores them.
    """

    model: str
    gpu: str
    tp: int
    vllm_version: str
    alpha: tuple[float, float, float]
    beta: tuple[float, float, float]
    total_kv_blocks: int

    @property
    def instance_kv_blocks(self) -> int:
        """KV blocks one serving instance (``tp`` GPUs) has: the recorded count over ``tp``.

        The reference's ``defaults.yaml`` counts blocks over all TP ranks: its TP > 1
        entries are TP x (1.03 +- 0.01) x the per-GPU count derived from memory for
        every dense model (Llama-3.1-8B: 132139 at TP 2 = 2 x 1.032 x 64030), while
        its TP 1 entries are 1.036 x the derived count. vLLM, whose block count is the
        capacity the scheduler sees, reports the per-GPU figure (each block holds
        ``block_size`` tokens of every layer, with the KV heads split over the ranks),
        e.g. 30425 for Llama-3.1-70B at TP 4 where 30437 is derived. So one instance
        has the recorded count divided by TP (floored).
        """
        return max(1, self.total_kv_blocks // max(1, self.tp))


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
    #: Published memory size (GB as marketed); 0 when unknown.
    memory_gb: float = 0.0
    #: Memory the CUDA/ROCm runtime reports (GiB) -- what vLLM multiplies by
    #: ``gpu_memory_utilization``; 0 when unknown (then derived from ``memory_gb``).
    memory_gib: float = 0.0
    #: Where the figures come from (free text).
    source: str = ""

    @property
    def usable_memory_bytes(self) -> float:
        """Bytes the runtime exposes: ``memory_gib``, else 99% of ``memory_gb`` read as GiB.

        HBM sizes are marketed in binary units (an "80 GB" H100 has 80 GiB, of which the
        runtime shows about 79.2 GiB); 0 when the GPU's memory is unknown.
        """
        if self.memory_gib > 0:
            return self.memory_gib * 2**30
        return self.memory_gb * 0.99 * 2**30
