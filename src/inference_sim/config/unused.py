"""Flags the chosen workload or engine would ignore: warned or refused, never silent.

The reference's own flags that a workload ignores -- ``--rate``, ``--num-requests`` and
the length flags with a trace replay, the length flags and ``--workload PRESET`` with a
workload spec -- are accepted with one warning naming them, as the reference accepts
them (cli.md 5): a command it runs must run here. This simulator's own flags that do not
apply are refused (one line, exit 2), the CLI's rule for them: ``--trace-format`` /
``--trace-block-size`` / ``--trace-speedup`` without a trace (a workload spec included),
``--trace-block-size`` with a trace that is not Mooncake, ``--trace-speedup`` with a
length trace that has no time column, LoRA options with LoRA off.
``--gpu-memory-utilization`` with a block count that is not derived from memory and
``--snapshot-refresh-interval`` with routing that reads no cached KV signal are warnings
(the reference's scripts pass them).

:func:`accept_reference_flags` adapts the few reference command lines that the option
checks would refuse before the workload is known (a negative ``--seed``, a trace path
without ``--workload traces``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from inference_sim.config.errors import ConfigError
from inference_sim.config.numbers import parse_integer
from inference_sim.config.options import BY_NAME
from inference_sim.core.rng import seed_from_int64
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.plan import INLINE_SPEC, InlineWorkload, untimed_length_trace

log = logging.getLogger("inference_sim")

#: Options that shape the synthetic (distribution and preset) requests only.
_LENGTH_FLAGS = tuple(
    f"{what}_tokens{suffix}"
    for what in ("prompt", "output")
    for suffix in ("", "_stdev", "_min", "_max")
)
SYNTHETIC_FLAGS = ("prefix_tokens", *_LENGTH_FLAGS)
#: This simulator's own options that describe the file of ``--workload traces``.
TRACE_FLAGS = ("trace_format", "trace_block_size", "trace_speedup")


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
    o: dict[str, Any], explicit: frozenset[str], inline: InlineWorkload | None = None
) -> None:
    """Warn about the reference's workload flags (given, not their default) that the
    chosen workload ignores, and set them back to their defaults so the results'
    ``config`` describes the run that was made; refuse this simulator's own trace flags
    without a trace (WorkloadError).

    Warnings, not errors: the reference accepts and ignores these combinations
    (cli.md 5), and a command it runs must run here too.
    """
    inline = inline or InlineWorkload()
    spec = o["workload_spec"]
    if spec:
        where = spec if isinstance(spec, str) else INLINE_SPEC
        own = changed_flags(o, explicit, TRACE_FLAGS)
        if own:
            hint = "; --aggregate-rate scales a spec's rate" if "speedup" in own[-1] else ""
            raise WorkloadError(
                f"{', '.join(own)}: no effect with --workload-spec {where}, whose clients give "
                f"the requests; {'it applies' if len(own) == 1 else 'they apply'} to the "
                f"file of --workload traces{hint}"
            )
        given = changed_flags(o, explicit, SYNTHETIC_FLAGS)
        if "workload" in explicit and o["workload"] != "distribution":
            given.insert(0, f"--workload {o['workload']}")
            if o["workload"] == "traces" and o["workload_traces_filepath"]:
                given.insert(1, f"--workload-traces-filepath {o['workload_traces_filepath']}")
        if given:
            log.warning(
                "%s: no effect with --workload-spec %s, whose clients give the requests and "
                "their lengths (the reference ignores %s too)",
                ", ".join(given),
                where,
                "them" if len(given) > 1 else "it",
            )
        # What ran: the spec, not the preset, trace or lengths named beside it.
        _reset(o, ("workload", "workload_traces_filepath", *SYNTHETIC_FLAGS))
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
                hint = (
                    " (only a length trace without a time column takes --rate; "
                    "--trace-speedup replays the recorded times faster or slower)"
                )
            log.warning(
                "%s: no effect with --workload traces, which replays every row of the trace "
                "as recorded%s; --horizon bounds a replay",
                ", ".join(given),
                hint,
            )
            ignored = ("num_requests", *SYNTHETIC_FLAGS, *(() if untimed else ("rate",)))
            _reset(o, ignored)
        _refuse_block_size(o, explicit, inline)
        _refuse_speedup(o, explicit, inline)
        return
    given = changed_flags(o, explicit, TRACE_FLAGS)
    if given:
        raise WorkloadError(
            f"{', '.join(given)}: no effect with --workload {o['workload']}; "
            f"{'it applies' if len(given) == 1 else 'they apply'} to the file of "
            "--workload traces"
        )


def _reset(o: dict[str, Any], names: Iterable[str]) -> None:
    """Set the options ``names`` back to their defaults."""
    for name in names:
        o[name] = BY_NAME[name].default


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


def _refuse_speedup(o: Mapping[str, Any], explicit: frozenset[str], inline: InlineWorkload) -> None:
    """``--trace-speedup`` divides a trace's recorded times: a length trace without a time
    column has none (its requests arrive at ``--rate``)."""
    given = changed_flags(o, explicit, ("trace_speedup",))
    if not given:
        return
    try:
        untimed = untimed_length_trace(o, inline)
    except (WorkloadError, OSError):
        return  # an unreadable trace: its reader reports that
    if untimed:
        path = o["workload_traces_filepath"]
        where = f" {path}" if path and inline.trace is None else " (in memory)"
        raise WorkloadError(
            f"{given[0]}: no effect with the length trace{where}, which has no time column "
            "(its requests arrive at --rate); change --rate instead"
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


# --- reference command lines the option checks would refuse ---------------------------


def accept_reference_flags(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` (options given on the command line, canonical names, maybe ``config``)
    with the reference's accepted spellings turned into what the reference runs.

    The option checks run before the workload is known and would refuse these, although
    the reference runs them (cli.md 2.1, 2.4, 5):

    * ``--seed -1``: the reference's seed is int64; a negative seed is read as its two's
      complement (:func:`inference_sim.core.rng.seed_from_int64`);
    * ``--workload-traces-filepath`` without ``--workload traces``: the reference's
      default workload is distribution and the path is ignored; warned and dropped.

    Idempotent: what it returns has nothing left to adapt, so a second call says nothing.
    """
    out = dict(raw)
    peeked: list[dict[str, Any]] = []

    def given(name: str) -> Any:
        """The value of ``name`` from the flags, else from the ``--config`` file."""
        if name in out:
            return out[name]
        if not peeked:
            peeked.append(_config_options(out.get("config")))
        return peeked[0].get(name)

    seed = parse_integer(out["seed"]) if "seed" in out else None
    if seed is not None and seed < 0 and seed_from_int64(seed) != seed:
        out["seed"] = seed_from_int64(seed)
        log.info(
            "--seed %d is seed %d: the reference's int64 seed read as 64 unsigned bits",
            seed,
            out["seed"],
        )
    path = out.get("workload_traces_filepath")
    if path and isinstance(path, str | os.PathLike):
        workload = given("workload") or "distribution"
        spec = given("workload_spec")
        if workload != "traces":
            del out["workload_traces_filepath"]
            if spec:
                why = f"with --workload-spec {spec}, which gives the requests"
            elif given("workload"):
                why = f"with --workload {workload}; give --workload traces to replay it"
            else:
                why = (
                    "without --workload traces (the workload is distribution, the default); "
                    "add --workload traces to replay it"
                )
            log.warning(
                "--workload-traces-filepath %s: no effect %s (the reference ignores the "
                "path without --workload traces too)",
                os.fspath(path),
                why,
            )
    return out


def _config_options(path: Any) -> dict[str, Any]:
    """The options of a ``--config`` file ({} without one, or when it does not read: the
    resolver reports that with its own message)."""
    if not path:
        return {}
    from inference_sim.config.resolve import load_run_config

    try:
        return load_run_config(path)
    except ConfigError:
        return {}
