"""The results' ``lora`` section (docs/lora.md): per-adapter latency and throughput,
per-instance adapter loads and evictions, requests skipped for ``max_loras``.

Reads each instance's ``lora`` state (``instance.lora.LoraState``) by attribute, so
metrics does not import the instance layer; instances without LoRA have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference_sim.metrics.stats import mean_ms, percentile_ms

#: The key of requests without an adapter (refused as an adapter's name at input).
BASE_MODEL = "(base)"


def lora_section(instances: Sequence[Any], end_time: int) -> dict[str, Any] | None:
    """The section, or None when no instance serves LoRA.

    Every adapter a request reached an instance with has a row, its requests counted
    whether they completed or not (a starved adapter shows 0 completed), with those
    still waiting or running at the end of the run and those dropped as unservable."""
    states = [(inst, getattr(inst, "lora", None)) for inst in instances]
    states = [(inst, st) for inst, st in states if st is not None]
    if not states:
        return None
    duration = end_time / 1e6
    merged: dict[str, tuple[list[int], list[int], list[int]]] = {}
    # adapter -> [requests, still queued, still running, dropped as unservable]
    counts: dict[str, list[int]] = {}
    for inst, st in states:
        for adapter, n in st.requests.items():
            counts.setdefault(adapter or BASE_MODEL, [0, 0, 0, 0])[0] += n
        for k, queue in ((1, inst.waiting), (2, inst.running)):
            for req in queue:
                counts.setdefault(req.adapter or BASE_MODEL, [0, 0, 0, 0])[k] += 1
        for adapter, n in st.dropped.items():
            counts.setdefault(adapter or BASE_MODEL, [0, 0, 0, 0])[3] += n
        for adapter, (ttft, e2e, out) in st.per_adapter.items():
            m = merged.setdefault(adapter or BASE_MODEL, ([], [], []))
            m[0].extend(ttft)
            m[1].extend(e2e)
            m[2].extend(out)
    adapters: dict[str, Any] = {}
    for adapter in sorted(counts.keys() | merged.keys()):
        ttft, e2e, out = (sorted(v) for v in merged.get(adapter, ([], [], [])))
        requests, queued, running, dropped = counts.get(adapter, (0, 0, 0, 0))
        n = len(ttft)
        row: dict[str, Any] = {
            "requests": requests,
            "completed_requests": n,
            "still_queued": queued,
            "still_running": running,
            "dropped_unservable": dropped,
        }
        for key, values in (("ttft", ttft), ("e2e", e2e)):
            row[f"{key}_mean_ms"] = mean_ms(values)
            for p in (50, 90, 99):
                row[f"{key}_p{p}_ms"] = percentile_ms(values, p)
        row["responses_per_sec"] = n / duration if duration > 0 else 0.0
        row["tokens_per_sec"] = sum(out) / duration if duration > 0 else 0.0
        adapters[adapter] = row
    first = states[0][1].settings
    per_instance = {
        inst.name: {
            "gpu_loads": st.gpu_loads,
            "gpu_evictions": st.gpu_evictions,
            "cpu_loads": st.cpu_loads,
            "cpu_evictions": st.cpu_evictions,
            "load_time_ms": st.load_time / 1000.0,
            "preloaded_adapters": st.preloaded,
            "skipped_for_max_loras": st.skip_events,
            "max_adapters_in_batch": st.max_adapters_in_batch,
        }
        for inst, st in states
    }
    return {
        "max_loras": first.max_loras,
        "max_cpu_loras": first.max_cpu_loras,
        "max_lora_rank": first.max_lora_rank,
        "adapter_bytes_per_rank": first.bytes_per_rank,
        "requests_skipped_for_max_loras": sum(len(st.skipped_requests) for _i, st in states),
        "skip_events_for_max_loras": sum(st.skip_events for _i, st in states),
        "adapter_loads": sum(st.gpu_loads for _i, st in states),
        "adapter_evictions": sum(st.gpu_evictions for _i, st in states),
        "adapters": adapters,
        "instances": per_instance,
    }
