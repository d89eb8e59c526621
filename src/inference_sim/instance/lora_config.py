"""Multi-LoRA serving settings of one instance (vLLM's ``LoRAConfig``), docs/lora.md.

Times are µs, bandwidths bytes per µs (1 GB/s = 1000 bytes/µs). ``bytes_per_rank`` is
what one GPU holds of a rank-1 adapter (``catalog.lora``); 0 when the base model's
architecture is unknown, and then loads cost only their base latency and the per-step
term only its per-adapter overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inference_sim.core.errors import ConfigError
from inference_sim.metrics.lora import BASE_MODEL

#: The ``--max-lora-rank`` values vLLM accepts (``vllm/config/lora.py``: ``MaxLoRARanks
#: = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]``; any other is refused at start-up).
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

#: How errors name the adapters listed up front (by flag or in a run config's block).
LISTED = "--lora-adapters (or the lora: block)"


def check_adapter_name(name: str, where: str) -> None:
    """ConfigError for an adapter named as the results' key of base-model requests."""
    if name == BASE_MODEL:
        raise ConfigError(
            f"{where}: adapter name {BASE_MODEL!r} is reserved (the results' key of requests "
            "without an adapter); rename the adapter"
        )


@dataclass(frozen=True, slots=True)
class LoraSettings:
    """The LoRA limits and costs (see docs/lora.md for the defaults' sources)."""

    max_loras: int = 1  # distinct adapters in one batch = GPU adapter slots
    max_cpu_loras: int = 1  # adapters kept in host memory (LRU)
    max_lora_rank: int = 16
    #: Adapters listed up front (``--lora-adapters`` / the ``lora:`` block, vLLM's
    #: ``--lora-modules``) as (name, rank), in list order: loaded at every server start.
    #: Requests may name others (rank from the first request naming one).
    adapters: tuple[tuple[str, int], ...] = ()
    bytes_per_rank: float = 0.0
    #: Bytes per unit of rank of the adapter's file, read whole from disk by every TP
    #: worker (0: ``bytes_per_rank``).
    file_bytes_per_rank: float = 0.0
    cpu_gpu_bandwidth: float = 25_000.0  # bytes/µs (25 GB/s)
    cpu_gpu_base_latency: int = 0
    disk_bandwidth: float = 2_000.0  # bytes/µs (2 GB/s)
    disk_base_latency: int = 0
    #: Per-step SGMV term: each distinct adapter's weights read once at this bandwidth
    #: (bytes/µs; 0 = no read term) plus a fixed overhead per distinct adapter.
    hbm_bandwidth: float = 0.0
    step_overhead_per_adapter: float = 0.0
    #: Activation bytes the LoRA kernels move per token of a LoRA request (per GPU):
    #: a per-token term of the step at ``hbm_bandwidth`` (0 = none).
    token_bytes: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_loras", "max_cpu_loras", "max_lora_rank"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_lora_rank not in MAX_LORA_RANKS:
            raise ValueError(
                f"max_lora_rank must be one of {', '.join(map(str, MAX_LORA_RANKS))}, "
                f"got {self.max_lora_rank}"
            )
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras must be >= max_loras ({self.max_loras}), got {self.max_cpu_loras}"
            )
        for name in ("cpu_gpu_bandwidth", "disk_bandwidth"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite value > 0, got {value}")
        for name in (
            "bytes_per_rank",
            "file_bytes_per_rank",
            "cpu_gpu_base_latency",
            "disk_base_latency",
            "hbm_bandwidth",
            "step_overhead_per_adapter",
            "token_bytes",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite value >= 0, got {value}")
        for name, rank in self.adapters:
            if not 0 < rank <= self.max_lora_rank:
                raise ValueError(
                    f"adapter {name!r}: rank must be in [1, max_lora_rank={self.max_lora_rank}],"
                    f" got {rank}"
                )

    def adapter_bytes(self, rank: int) -> float:
        return self.bytes_per_rank * rank

    def load_cpu_to_gpu(self, rank: int) -> int:
        """µs to copy an adapter of ``rank`` from host memory into a GPU slot."""
        return self.cpu_gpu_base_latency + math.ceil(
            self.adapter_bytes(rank) / self.cpu_gpu_bandwidth
        )

    def load_disk_to_cpu(self, rank: int) -> int:
        """µs to read an adapter of ``rank`` from disk into host memory (the whole file:
        each TP worker reads it all)."""
        per_rank = self.file_bytes_per_rank or self.bytes_per_rank
        return self.disk_base_latency + math.ceil(per_rank * rank / self.disk_bandwidth)

    def step_cost(self, ranks: list[int], lora_tokens: int = 0) -> float:
        """Extra step time (µs) of a batch using adapters of these ranks (one per adapter)
        with ``lora_tokens`` tokens of LoRA requests: each adapter's slot read once, at
        ``max_lora_rank`` whatever its own rank (vLLM's shrink and expand kernels take the
        slot's padded shape), plus the kernels' activation traffic per LoRA token."""
        cost = self.step_overhead_per_adapter * len(ranks)
        if self.hbm_bandwidth > 0:
            slots = self.bytes_per_rank * self.max_lora_rank * len(ranks)
            cost += (slots + self.token_bytes * lora_tokens) / self.hbm_bandwidth
        return cost
