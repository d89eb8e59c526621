"""Engine parameters of one serving instance (vLLM's scheduler and cache config)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inference_sim.instance.lora_config import LoraSettings


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Batch-formation and KV-cache limits; names follow vLLM.

    ``long_prefill_token_threshold`` 0 means prompts are chunked only by the token
    budget; a positive value caps every prefill chunk at that many tokens.

    ``enable_chunked_prefill`` False is vLLM's ``--no-enable-chunked-prefill``: a waiting
    request is admitted only when all its new tokens (after prefix-cache hits, capped by
    the threshold) fit the step's remaining budget, else admission stops there
    (docs/engine.md#chunked-prefill-off---no-enable-chunked-prefill).
    """

    num_gpu_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    long_prefill_token_threshold: int = 0
    enable_prefix_caching: bool = True
    exact_steps: bool = False  # the plain one-step-at-a-time stepper (reference mode)
    # Tiered KV cache (docs/kv-offload.md); kv_cpu_blocks 0 means GPU only.
    kv_cpu_blocks: int = 0
    kv_offload_threshold: float = 0.9
    kv_transfer_bandwidth: float = 100.0  # tokens per µs
    kv_transfer_base_latency: int = 0  # µs per block loaded back
    kv_block_bytes: float = 0.0  # bytes of one block (all TP ranks); 0 when unknown
    # Multi-LoRA serving (docs/lora.md); None = off (the stepper make_instance picks).
    lora: LoraSettings | None = None
    # Speculative decoding (docs/speculative-decoding.md): an
    # instance.speculative.SpeculativeConfig, or None when off.
    speculative: Any = None
    # vLLM's async scheduling (docs/engine.md#async-scheduling): step N+1 is formed while
    # step N runs. Also on when the latency model says its engine runs that way.
    async_scheduling: bool = False
    # vLLM v1's default (SchedulerConfig.enable_chunked_prefill, vllm/config/scheduler.py).
    enable_chunked_prefill: bool = True

    def __post_init__(self) -> None:
        for name in ("num_gpu_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.long_prefill_token_threshold < 0:
            value = self.long_prefill_token_threshold
            raise ValueError(f"long_prefill_token_threshold must be >= 0, got {value}")
        for name in ("kv_cpu_blocks", "kv_transfer_base_latency", "kv_block_bytes"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        t = self.kv_offload_threshold
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ValueError(f"kv_offload_threshold must be a finite value in [0, 1], got {t}")
        bw = self.kv_transfer_bandwidth
        if self.kv_cpu_blocks > 0 and not (math.isfinite(bw) and bw > 0):
            raise ValueError(
                f"kv_transfer_bandwidth must be a finite value > 0 when kv_cpu_blocks > 0, got {bw}"
            )
