"""Refuse flags the chosen workload or engine would ignore (one line, exit 2).

``--rate``, ``--num-requests`` and the length flags used to be dropped without a word by
trace replay and workload specs, ``--workload PRESET`` by a spec, and ``--trace-format``
/ ``--trace-block-size`` by synthetic workloads: the run then answered another question
than the one asked. Refusing them is the CLI's rule for flags that do not apply
(``--arrival`` with a trace, ``--burstiness`` without gamma, ``--speculative-model``
without a draft model, ``--prefill-tp`` without disaggregation). ``--trace-block-size``
with a trace that is not Mooncake is refused too; ``--gpu-memory-utilization`` with a
block count that is not derived from memory and ``--snapshot-refresh-interval`` with
routing that reads no cached KV signal are warnings (the reference's scripts pass them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from inference_sim.config.errors import ConfigError
from inference_sim.config.options import BY_NAME
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.plan import InlineWorkload, untimed_length_trace

log = logging.getLogger("inference_sim")

#: Options that shape the synthetic (distribution and preset) requests only.
_LENGTH_FLAGS = tuple(
    f"{what}_tokens{suffix}"
    for what in ("prompt", "output")
    for suffix in ("", "_stdev", "_min", "_max")
)
SYNTHETIC_FLAGS = ("prefix_tokens", *_LENGTH_FLAGS)


def changed_names(
    o: Mapping[str, Any], explicit: frozenset[str], names: Iterable[str]
) -> list[str]:
    """The names given with a value other than their default.

    Only values that change something count (as for ``--arrival``): a results file used
    as ``--config`` (or a full ``SimConfig`` dump) repeats every option, the defaults
    included, and must still run.
    """
    return [n for n in names if n in explicit and o[n] != BY_NAME[n].default]


def changed_flags(
    o: Mapping[str, Any], explicit: frozenset[str], names: Iterable[str]
) -> list[str]:
    """``--flag value`` of each name given with a value other than its default."""
    out = []
    for name in changed_names(o, explicit, names):
        value = o[name]
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        out.append(f"--{name.replace('_', '-')} {shown}")
    return out


def refuse_unused_flags(
    o: Mapping[str, Any], explicit: frozenset[str], inline: InlineWorkload | None = None
) -> None:
    """WorkloadError naming every workload flag (given, not its default) that the
    chosen workload would ignore, and why."""
    inline = inline or InlineWorkload()
    spec = o["workload_spec"]
    if spec:
        given = changed_flags(o, explicit, SYNTHETIC_FLAGS)
        if given:
            raise WorkloadError(
                f"{', '.join(given)}: no effect with --workload-spec, whose clients give "
                "the lengths (clients[].input_distribution, output_distribution, prefix "
                "groups); remove the flag or edit the spec"
            )
        if "workload" in explicit and o["workload"] != "distribution":
            where = spec if isinstance(spec, str) else "(inline)"
            raise WorkloadError(
                f"--workload {o['workload']}: no effect with --workload-spec {where}, "
                "which gives the requests; give one of them"
            )
        return
    if o["workload"] == "traces":
        given = changed_flags(o, explicit, ("num_requests", *SYNTHETIC_FLAGS))
        rate = changed_flags(o, explicit, ("rate",))
        untimed = False
        if rate:
            try:
                untimed = untimed_length_trace(o, inline)
            except (WorkloadError, OSError):
                return  # an unreadable trace: its reader reports that, naming the flag
        if rate and not untimed:
            given = rate + given
        if given:
            hint = ""
            if rate and not untimed:
                hint = " (only a length trace without a time column takes --rate)"
            raise WorkloadError(
                f"{', '.join(given)}: no effect with --workload traces, which replays every "
                f"row of the trace as recorded{hint}; remove the flag (--horizon bounds a "
                "replay)"
            )
        _refuse_block_size(o, explicit, inline)
        return
    given = changed_flags(o, explicit, ("trace_format", "trace_block_size"))
    if given:
        raise WorkloadError(
            f"{', '.join(given)}: no effect with --workload {o['workload']}; it describes "
            "the file of --workload traces"
        )


def _refuse_block_size(
    o: Mapping[str, Any], explicit: frozenset[str], inline: InlineWorkload
) -> None:
    """``--trace-block-size`` sizes the blocks of a Mooncake trace's ``hash_ids`` only."""
    given = changed_flags(o, explicit, ("trace_block_size",))
    if not given:
        return
    path = o["workload_traces_filepath"]
    fmt = "lengths" if inline.trace is not None else o["trace_format"]
    if fmt == "auto" and path:
        from inference_sim.workload.formats import detect_format

        try:
            fmt = detect_format(path)
        except (WorkloadError, OSError):
            return  # an unreadable trace: its reader reports that, naming the flag
    if fmt != "mooncake":
        where = f" {path}" if path and inline.trace is None else " (in memory)"
        raise WorkloadError(
            f"{given[0]}: no effect with the {fmt} trace{where}; it sets the block size of "
            "a Mooncake trace's hash_ids (--trace-format mooncake); remove the flag"
        )


#: Options of the CPU KV tier (docs/kv-offload.md) and of LoRA serving (docs/lora.md).
TIER_FLAGS = (
    "kv_offload_threshold",
    "kv_transfer_bandwidth",
    "kv_transfer_base_latency",
    "kv_transfer_link",
)
LORA_FLAGS = (
    "max_cpu_loras",
    "max_lora_rank",
    "lora_cpu_gpu_bandwidth",
    "lora_cpu_gpu_latency",
    "lora_disk_bandwidth",
    "lora_disk_latency",
    "lora_step_overhead",
)


def refuse_unused_feature_flags(
    o: Mapping[str, Any], explicit: frozenset[str], *, cpu_tier: bool, lora_on: bool
) -> None:
    """ConfigError for LoRA's options with LoRA off, as ``--prefill-tp`` without
    disaggregation and ``--autoscale-target`` without autoscaling already are; a warning
    for the CPU KV tier's without a tier (reference flags, which its scripts may pass)."""
    given = [] if cpu_tier else changed_flags(o, explicit, TIER_FLAGS)
    if given:  # a warning: the reference accepts these without a tier, and its scripts run
        log.warning(
            "%s: no effect without a CPU KV tier; give --kv-cpu-blocks or --cpu-offload-gib "
            "(docs/kv-offload.md)",
            ", ".join(given),
        )
    given = [] if lora_on else changed_flags(o, explicit, LORA_FLAGS)
    if given:
        raise ConfigError(
            f"{', '.join(given)}: no effect with LoRA off; give --max-loras N or "
            "--lora-adapters, or name adapters in the workload (docs/lora.md)"
        )


def warn_unused_memory_flag(o: Mapping[str, Any], explicit: frozenset[str], kv_from: str) -> None:
    """Warn that ``--gpu-memory-utilization`` changes nothing when the KV block count is
    not derived from GPU memory (a trained entry's count, ``--total-kv-blocks``).

    A warning, not an error: the reference's scripts pass it with trained models, where
    its vLLM ran at that utilisation when the blocks were counted.
    """
    given = changed_flags(o, explicit, ("gpu_memory_utilization",)) if kv_from else []
    if given:
        log.warning(
            "%s: no effect; the KV block count comes from %s, not from GPU memory "
            "(docs/roofline.md)",
            given[0],
            kv_from,
        )


#: Bundled routing policies and scorers that read none of the cached snapshot fields
#: (KV utilisation, free KV blocks, cache-hit rate: cluster/snapshot.py); plug-ins may.
_LIVE_ONLY_ROUTING = (
    "round-robin",
    "least-loaded",
    "always-busiest",
    "prefix-affinity",
    "vllm-dp",  # its own coordinator period (100 ms), not --snapshot-refresh-interval
)
_LIVE_ONLY_SCORERS = (
    "queue-depth",
    "waiting-queue",
    "load-balance",
    "prefix-affinity",
    "adapter-affinity",
)
_LIVE_ONLY_ADMISSION = ("always-admit", "reject-all", "token-bucket")


def _reads_cached_fields(policy: str, scorers: str) -> bool:
    if policy == "weighted":
        from inference_sim.policies.scorers import DEFAULT_PROFILE, parse_scorers

        pairs = parse_scorers(scorers) if scorers.strip() else DEFAULT_PROFILE
        return any(name not in _LIVE_ONLY_SCORERS for name, _ in pairs)
    return policy not in _LIVE_ONLY_ROUTING


def warn_unused_refresh_interval(o: Mapping[str, Any], explicit: frozenset[str]) -> None:
    """Warn that ``--snapshot-refresh-interval`` changes nothing when no policy of the run
    reads the fields it caches (round-robin, least-loaded, ...). A warning, as
    ``--routing-scorers`` without weighted routing: the reference's scripts pass it."""
    given = changed_flags(o, explicit, ("snapshot_refresh_interval",))
    if not given or o["admission_policy"] not in _LIVE_ONLY_ADMISSION:
        return
    routers = {(o["routing_policy"], o["routing_scorers"])}
    if o.get("prefill_instances") or o.get("decode_instances"):  # each pool's, as config/pd.py
        for pool in ("prefill", "decode"):
            routers.add(
                (
                    o[f"{pool}_routing_policy"] or o["routing_policy"],
                    o[f"{pool}_routing_scorers"] or o["routing_scorers"],
                )
            )
    if any(_reads_cached_fields(p, s) for p, s in routers):
        return
    names = ", ".join(
        sorted({f"{p} (scorers {s.strip() or 'default'})" if p == "weighted" else p
                for p, s in routers})
    )  # fmt: skip
    log.warning(
        "%s: no effect with routing policy %s, which reads no KV utilisation, free KV "
        "blocks or cache-hit rate (the only signals it caches); use weighted routing with "
        "the kv-utilization scorer, or drop the flag (docs/cluster.md)",
        given[0],
        names,
    )
