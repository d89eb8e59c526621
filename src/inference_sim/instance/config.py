"""Engine parameters of one serving instance (vLLM's scheduler and cache config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Batch-formation and KV-cache limits; names follow vLLM.

    ``long_prefill_token_threshold`` 0 means prompts are chunked only by the token
    budget; a positive value caps every prefill chunk at that many tokens.
    """

    num_gpu_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    long_prefill_token_threshold: int = 0
    enable_prefix_caching: bool = True
    exact_steps: bool = False  # the plain one-step-at-a-time stepper (reference mode)

    def __post_init__(self) -> None:
        for name in ("num_gpu_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.long_prefill_token_threshold < 0:
            value = self.long_prefill_token_threshold
            raise ValueError(f"long_prefill_token_threshold must be >= 0, got {value}")
