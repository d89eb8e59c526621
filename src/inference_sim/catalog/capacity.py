"""How many KV-cache blocks fit on one GPU, derived the way vLLM sizes its cache.

vLLM loads the weights, runs one profiling forward pass at the full token budget, and
gives the KV cache whatever is left of ``total memory x gpu_memory_utilization``::

    blocks = floor((memory x utilization - weights / TP - reserve) / bytes_per_block)
    bytes_per_block = 2 x layers x max(1, kv_heads // TP) x head_dim x block_size x dtype_bytes

(MLA models store one latent of ``kv_lora_rank + rope_dim`` per token and layer instead,
on every rank.) ``reserve`` is what the profiling run and the runtime hold besides the
weights: a fixed part, a part proportional to ``max_num_batched_tokens`` and, for
checkpoints with a vision encoder, the encoder's profiling run. The three constants were
fitted to the block counts vLLM 0.15.1 logged for the training runs; docs/roofline.md
lists the errors per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inference_sim.catalog.architecture import ModelArchitecture
from inference_sim.catalog.schema import GpuSpec

__all__ = [
    "MLA_HOPPER_BLOCK_SIZE",
    "RESERVE_BASE_GIB",
    "RESERVE_MULTIMODAL_GIB",
    "RESERVE_PER_TOKEN_KIB",
    "KvCapacity",
    "derive_kv_blocks",
    "is_hopper",
    "kv_block_bytes",
    "reserve_bytes",
    "vllm_block_size",
]

GIB = float(2**30)

#: Memory held outside weights and KV whatever the load: CUDA/NCCL/cuBLAS workspaces
#: ("non-torch memory"), the sampler's logits buffers and the CUDA-graph pool.
RESERVE_BASE_GIB = 1.2
#: Activation peak of the profiling forward pass, per token of the step budget.
RESERVE_PER_TOKEN_KIB = 32.0
#: Extra profiling memory of checkpoints that carry a vision encoder (vLLM profiles the
#: encoder with its largest dummy inputs). Fitted to a single run (Llama-4-Scout, TP2).
RESERVE_MULTIMODAL_GIB = 4.5


#: The KV block size vLLM forces for MLA models on Hopper GPUs: its default MLA backend
#: there is FlashMLA, whose kernels take 64-token blocks only
#: (``CudaPlatformBase.check_and_update_config`` in vllm/platforms/cuda.py, from v0.8 to
#: v0.15 and later: "Forcing kv cache block size to 64 for FlashMLA backend").
MLA_HOPPER_BLOCK_SIZE = 64
#: GPU names (upper case) of the Hopper generation (compute capability 9.0), the only
#: one FlashMLA's dense kernels run on (``is_flashmla_dense_supported``).
_HOPPER_PREFIXES = ("H100", "H200", "H800", "H20", "GH200")


def is_hopper(gpu_name: str) -> bool:
    """Whether ``gpu_name`` (a catalog or ``--hardware-config`` name) is a Hopper GPU."""
    name = gpu_name.strip().upper()
    return name.startswith(_HOPPER_PREFIXES)


def vllm_block_size(arch: ModelArchitecture, gpu_name: str, default: int = 16) -> int:
    """The KV block size vLLM runs ``arch`` with on ``gpu_name`` when none is given.

    vLLM's CUDA default is 16 tokens, but an MLA model on a Hopper GPU gets FlashMLA,
    which forces 64 (so vLLM logs 4x fewer, 4x larger blocks than a 16-token count).
    Blackwell's MLA backends force 64 or 128 depending on the release; they are not
    modelled (docs/roofline.md).
    """
    if arch.mla is not None and is_hopper(gpu_name):
        return MLA_HOPPER_BLOCK_SIZE
    return default


@dataclass(frozen=True, slots=True)
class KvCapacity:
    """The block count and the memory budget it came from (bytes, per GPU)."""

    blocks: int
    memory_bytes: float
    budget_bytes: float
    weight_bytes: float
    reserve_bytes: float
    block_bytes: float

    @property
    def fits(self) -> bool:
        return self.blocks > 0

    def explain(self) -> str:
        """One line: where the blocks come from, in GiB."""
        return (
            f"{self.memory_bytes / GIB:.2f} GiB x utilization = {self.budget_bytes / GIB:.2f} GiB; "
            f"weights {self.weight_bytes / GIB:.2f} GiB/GPU; "
            f"reserve {self.reserve_bytes / GIB:.2f} GiB; "
            f"{self.block_bytes / 2**20:.3f} MiB per block -> {self.blocks} blocks"
        )


def kv_block_bytes(
    arch: ModelArchitecture, tp: int, block_size: int, kv_dtype_bytes: float | None = None
) -> float:
    """Bytes one KV block occupies on one GPU."""
    return arch.kv_bytes_per_token(tp, kv_dtype_bytes) * block_size


def reserve_bytes(arch: ModelArchitecture, max_num_batched_tokens: int) -> float:
    """Memory per GPU that is neither weights nor KV cache (see the module docstring)."""
    reserve = RESERVE_BASE_GIB * GIB + max_num_batched_tokens * RESERVE_PER_TOKEN_KIB * 1024.0
    if arch.extra_params > 0:
        reserve += RESERVE_MULTIMODAL_GIB * GIB
    return reserve


def derive_kv_blocks(
    arch: ModelArchitecture,
    gpu: GpuSpec,
    tp: int,
    *,
    block_size: int = 16,
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int = 2048,
    kv_dtype_bytes: float | None = None,
    lora_bytes: float = 0.0,
) -> KvCapacity:
    """KV blocks per GPU for ``arch`` on ``gpu`` at tensor parallelism ``tp``.

    ``blocks`` is 0 or negative when the weights and the reserve do not fit (check
    :attr:`KvCapacity.fits`). Raises ``ValueError`` for unusable inputs (unknown GPU
    memory, utilization outside (0, 1], non-positive TP or block size).
    """
    if tp <= 0:
        raise ValueError(f"--tp must be > 0 to derive the KV capacity, got {tp}")
    if block_size <= 0:
        raise ValueError(f"--block-size-in-tokens must be > 0, got {block_size}")
    if not (math.isfinite(gpu_memory_utilization) and 0 < gpu_memory_utilization <= 1):
        raise ValueError(
            f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}"
        )
    memory = gpu.usable_memory_bytes
    if memory <= 0:
        raise ValueError(
            f'GPU "{gpu.name}" has no memory size; add memoryGB to its --hardware-config '
            "entry or give --total-kv-blocks"
        )
    budget = memory * gpu_memory_utilization
    weights = arch.weight_bytes() / tp
    # LoRA adapter slots (max_loras x max_lora_rank, docs/lora.md) come out of the KV cache.
    reserve = reserve_bytes(arch, max_num_batched_tokens) + lora_bytes
    per_block = kv_block_bytes(arch, tp, block_size, kv_dtype_bytes)
    blocks = math.floor((budget - weights - reserve) / per_block)
    return KvCapacity(
        blocks=int(blocks),
        memory_bytes=memory,
        budget_bytes=budget,
        weight_bytes=weights,
        reserve_bytes=reserve,
        block_bytes=per_block,
    )
