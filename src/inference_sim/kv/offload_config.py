"""Options of the tiered (GPU + CPU) KV cache: validation and friendlier units.

The reference's flags give the CPU tier in blocks and the transfer bandwidth in tokens
per µs. Two friendlier spellings are derived here from the model's architecture:

* ``--cpu-offload-gib G``: CPU blocks = floor(G GiB / bytes of one block), where a
  block's bytes are those of all tensor-parallel ranks together (each rank offloads
  its own share, as vLLM's ``--kv-offloading-size`` counts the total over ranks);
* ``--kv-transfer-link pcie-gen4|pcie-gen5``: a per-GPU host<->device throughput in
  GB/s, converted to tokens per µs with the bytes one token occupies on one GPU (the
  ranks load their shares in parallel, each over its own link).

Errors are ``ValueError`` with one line naming the flag (the caller turns them into
``ConfigError``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inference_sim.catalog.architecture import ModelArchitecture
from inference_sim.catalog.capacity import kv_block_bytes
from inference_sim.kv.manager import block_transfer_time

GIB = float(2**30)

#: Effective host<->device copy throughput of one GPU's x16 link with pinned memory,
#: GB/s (1e9 bytes/s): about 80 % of the raw 32 and 64 GB/s per direction.
LINK_PRESETS_GBPS: dict[str, float] = {"pcie-gen4": 25.0, "pcie-gen5": 50.0}


@dataclass(frozen=True, slots=True)
class TierSettings:
    """The tiered-cache figures an instance is built with."""

    cpu_blocks: int
    offload_threshold: float
    transfer_bandwidth: float  # tokens per µs
    transfer_base_latency: int  # µs per block
    block_bytes: float  # one block, all TP ranks; 0 when the architecture is unknown
    notes: list[str] = field(default_factory=list)


#: Longest time to load one KV block back from the CPU: an hour (as for a latency-model
#: step, config/resolve.py) means a unit mistake, and keeps times far below 2^63 µs.
MAX_BLOCK_TRANSFER_US = 3_600_000_000


#: Most host memory for the CPU KV tier: 1 PiB, beyond any server (issue 21).
MAX_CPU_OFFLOAD_GIB = 2**20


def check_tier_ranges(o: Mapping[str, Any]) -> None:
    """The reference's range checks (cli.md 2.3), plus the two friendlier flags."""
    n = o["kv_cpu_blocks"]
    if n < 0:
        raise ValueError(f"--kv-cpu-blocks must be >= 0, got {n}")
    t = o["kv_offload_threshold"]
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"--kv-offload-threshold must be a finite value in [0, 1], got {t:f}")
    lat = o["kv_transfer_base_latency"]
    if lat < 0:
        raise ValueError(f"--kv-transfer-base-latency must be >= 0, got {lat}")
    gib = o["cpu_offload_gib"]
    if not (math.isfinite(gib) and gib >= 0):
        raise ValueError(f"--cpu-offload-gib must be a finite value >= 0, got {gib:g}")
    if gib > MAX_CPU_OFFLOAD_GIB:
        raise ValueError(
            f"--cpu-offload-gib must be <= {MAX_CPU_OFFLOAD_GIB:,} (1 PiB of host memory), "
            f"got {gib:g}"
        )
    link = o["kv_transfer_link"]
    if link and link not in LINK_PRESETS_GBPS:
        raise ValueError(
            f"--kv-transfer-link: unknown link {link!r}; valid: {', '.join(LINK_PRESETS_GBPS)}"
        )


def resolve_tier(
    o: Mapping[str, Any],
    explicit: frozenset[str],
    arch: ModelArchitecture | None,
) -> TierSettings:
    """CPU blocks and bandwidth in the engine's units, with info notes on derived figures."""
    check_tier_ranges(o)
    notes: list[str] = []
    model = o["model"]
    tp = o["tp"] if o["tp"] > 0 else 1
    bs = o["block_size_in_tokens"]
    gib = o["cpu_offload_gib"]
    link = o["kv_transfer_link"]
    cpu_blocks = o["kv_cpu_blocks"]
    bandwidth = o["kv_transfer_bandwidth"]
    per_gpu_block = kv_block_bytes(arch, tp, bs) if arch is not None else 0.0
    block_bytes = per_gpu_block * tp

    if gib > 0:
        if arch is None:
            raise ValueError(
                f"--cpu-offload-gib needs the bytes of a KV block, and {model} has no "
                "architecture (bundled or --model-config-folder); give --kv-cpu-blocks instead"
            )
        cpu_blocks = math.floor(gib * GIB / block_bytes)
        # Both may be given when they agree (a results file's config repeats a run).
        if "kv_cpu_blocks" in explicit and o["kv_cpu_blocks"] != cpu_blocks:
            raise ValueError(
                f"--cpu-offload-gib ({cpu_blocks} blocks) and --kv-cpu-blocks "
                f"({o['kv_cpu_blocks']}) both size the CPU KV tier; give one"
            )
        if cpu_blocks <= 0:
            raise ValueError(
                f"--cpu-offload-gib {gib:g} holds no KV block "
                f"({block_bytes / 2**20:.3f} MiB per block); give more memory"
            )
        notes.append(
            f"CPU KV tier: {gib:g} GiB / {block_bytes / 2**20:.3f} MiB per block "
            f"({model}, TP={tp}, {bs} tokens per block) = {cpu_blocks} blocks"
        )
    if link:
        if arch is None:
            raise ValueError(
                f"--kv-transfer-link needs the bytes of a KV token, and {model} has no "
                "architecture (bundled or --model-config-folder); give "
                "--kv-transfer-bandwidth (tokens per µs) instead"
            )
        gbps = LINK_PRESETS_GBPS[link]
        per_token = arch.kv_bytes_per_token(tp)
        bandwidth = gbps * 1e3 / per_token  # bytes/µs over bytes per token
        if "kv_transfer_bandwidth" in explicit and o["kv_transfer_bandwidth"] != bandwidth:
            raise ValueError(
                f"--kv-transfer-link ({bandwidth:.4g} tokens/µs) and --kv-transfer-bandwidth "
                f"({o['kv_transfer_bandwidth']:g}) both set the KV transfer bandwidth; give one"
            )
        notes.append(
            f"KV transfer link {link}: {gbps:g} GB/s per GPU / {per_token:.0f} bytes per "
            f"token per GPU = {bandwidth:.4g} tokens/µs"
        )
    if cpu_blocks > 0 and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(
            "--kv-transfer-bandwidth must be a finite value > 0 when --kv-cpu-blocks > 0, "
            f"got {bandwidth:f}"
        )
    if cpu_blocks > 0:
        base = o["kv_transfer_base_latency"]
        if not base + bs / bandwidth <= MAX_BLOCK_TRANSFER_US:  # in float: never overflows
            raise ValueError(
                f"--kv-transfer-base-latency {base} + {bs} tokens / --kv-transfer-bandwidth "
                f"{bandwidth:g}: loading one KV block back would take more than an hour "
                f"({MAX_BLOCK_TRANSFER_US:,} µs); check the units (µs, tokens per µs)"
            )
        per_block = block_transfer_time(bs, bandwidth, base)
        size = f" ({block_bytes / 2**20:.3f} MiB each)" if block_bytes > 0 else ""
        notes.append(
            f"CPU KV tier: {cpu_blocks} blocks{size}; offload above "
            f"{o['kv_offload_threshold']:g} GPU occupancy; loading one block back takes "
            f"{per_block} µs ({base} + ceil({bs} / {bandwidth:.4g}))"
        )
        if not o["enable_prefix_caching"]:
            notes.append(
                "CPU KV tier with prefix caching off: the GPU reuses no block, a block's "
                "content goes to the CPU once computed and prompts load hits from there "
                "(vLLM hashes blocks for its KV connector either way); "
                "--kv-offload-threshold does not apply"
            )
    elif link or "kv_offload_threshold" in explicit:
        notes.append("KV offload options have no effect without a CPU tier (--kv-cpu-blocks)")
    return TierSettings(
        cpu_blocks=cpu_blocks,
        offload_threshold=o["kv_offload_threshold"],
        transfer_bandwidth=bandwidth,
        transfer_base_latency=o["kv_transfer_base_latency"],
        block_bytes=block_bytes,
        notes=notes,
    )
