"""Tiered KV cache metrics: summary keys and per-request fields (docs/kv-offload.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference_sim.kv.manager import KVCacheManager

#: (an instance's KV manager, bytes of one of its blocks or 0 when unknown)
TierSource = tuple[KVCacheManager, float]


def tier_summary(sources: Sequence[TierSource]) -> dict[str, Any]:
    """Summary keys over the given instances; empty when none has a CPU tier.

    ``kv_transfer_bytes`` counts both directions and is given only when every tiered
    instance knows its bytes per block.
    """
    tiered = [(kv, nbytes) for kv, nbytes in sources if kv.cpu is not None]
    if not tiered:
        return {}
    offloads = sum(kv.cpu.offloads for kv, _ in tiered)  # type: ignore[union-attr]
    reloads = sum(kv.cpu.reloads for kv, _ in tiered)  # type: ignore[union-attr]
    thrash = sum(kv.cpu.thrash for kv, _ in tiered)  # type: ignore[union-attr]
    looked = sum(kv.cpu_lookup_blocks for kv, _ in tiered)
    hits = sum(kv.cpu_hit_blocks for kv, _ in tiered)
    out: dict[str, Any] = {
        "kv_offloads": offloads,
        "kv_reloads": reloads,
        "cpu_hit_rate": hits / looked if looked else 0.0,
    }
    if all(nbytes > 0 for _, nbytes in tiered):
        moved = sum((kv.cpu.offloads + kv.cpu.reloads) * nbytes for kv, nbytes in tiered)  # type: ignore[union-attr]
        out["kv_transfer_bytes"] = round(moved)
    out["kv_transfer_time_ms"] = sum(kv.transfer_us for kv, _ in tiered) / 1000.0
    out["kv_thrashing_rate"] = thrash / offloads if offloads else 0.0
    return out


def tier_request_fields(sources: Sequence[TierSource]) -> dict[int, dict[str, Any]]:
    """Request index -> fields for the requests that loaded blocks back from a CPU tier.

    A request preempted and resumed on the same instance adds up its loads.
    """
    sums: dict[int, list[float]] = {}  # index -> [blocks, bytes, µs]
    known: dict[int, bool] = {}
    for kv, nbytes in sources:
        for idx, (blocks, us) in kv.request_transfers.items():
            acc = sums.setdefault(idx, [0, 0.0, 0])
            acc[0] += blocks
            acc[1] += blocks * nbytes
            acc[2] += us
            known[idx] = known.get(idx, True) and nbytes > 0
    out: dict[int, dict[str, Any]] = {}
    for idx, (blocks, moved, us) in sums.items():
        fields: dict[str, Any] = {"kv_reloads": int(blocks)}
        if known[idx]:
            fields["kv_transfer_bytes"] = round(moved)
        fields["kv_transfer_time_ms"] = us / 1000.0
        out[idx] = fields
    return out
