"""Prefill/decode options: checks and per-pool deployments (docs/disaggregation.md).

A pool with its own ``--prefill-hardware/--prefill-tp`` (or decode) is resolved as a
run of its own with those values, so its KV capacity and latency model follow its
deployment exactly as a colocated run on that GPU and TP would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from inference_sim.config.checks import require_finite, require_one_of
from inference_sim.config.errors import ConfigError
from inference_sim.config.kv_dtype import with_kv_dtype
from inference_sim.config.options import OPTIONS, canonical_name
from inference_sim.config.unused import changed_names

log = logging.getLogger("inference_sim")

DECIDERS = ("never", "always", "prefix-threshold")
# What a pool may set on its own: its deployment (GPU, TP), its step-time model and its
# engine limits (a prefill pool with a large token budget, a decode pool with many
# sequences). 0 or "" means "as the run".
POOL_KEYS = (
    "hardware",
    "tp",
    "latency_model",
    "max_num_running_reqs",
    "max_num_scheduled_tokens",
)
_POOL_INTS = ("tp", "max_num_running_reqs", "max_num_scheduled_tokens")
# Autoscaling settings every autoscaled pool shares (start-up and price follow the pool).
_SHARED_AUTOSCALE = frozenset(
    spec.name for spec in OPTIONS if spec.name.startswith(("autoscale_", "replica_"))
)


def pd_enabled(o: Mapping[str, Any]) -> bool:
    """True when the options ask for prefill or decode pools."""
    return bool(o.get("prefill_instances") or o.get("decode_instances"))


def main_deployment_unused(o: Mapping[str, Any]) -> bool:
    """True when no instance runs the run's own GPU and TP: every instance is in a
    prefill or decode pool (no dual-role one, fixed or autoscaled) and both pools have a
    GPU or TP of their own. That deployment then need not fit (review 24)."""
    if not pd_enabled(o) or o.get("dual_autoscale_max", 0) > 0:
        return False
    if o["num_instances"] - o["prefill_instances"] - o["decode_instances"] > 0:
        return False
    return all(
        o[f"{pool}_instances"] == 0 or _own_deployment(o, pool) for pool in ("prefill", "decode")
    )


def _own_deployment(o: Mapping[str, Any], pool: str) -> bool:
    """Whether ``pool`` runs on a GPU or TP of its own (not the run's)."""
    over = pool_overrides(o, pool)
    hardware = str(over.get("hardware", "")).strip().lower()
    return bool(over.get("tp")) or (bool(hardware) and hardware != str(o["hardware"]).lower())


def pool_kv_notes(plan: Any, pools: Mapping[str, Any]) -> list[str]:
    """``--log info`` lines: each pool's KV blocks per instance and where they came from
    (the run's own count, in the ``starting:`` line, is not what a pool with its own GPU
    or TP has, nor any instance's when every one is in such a pool)."""
    o = plan.options
    p, d = o["prefill_instances"], o["decode_instances"]
    counts = {"prefill": p, "decode": d, "dual": o["num_instances"] - p - d}
    notes: list[str] = []
    for pool, count in counts.items():
        if count <= 0 and not o.get(f"{pool}_autoscale_max", 0):
            continue
        sub = pools.get(pool, plan)
        so = sub.options
        notes.append(
            f"P/D {pool} pool ({so['hardware'] or '?'}/TP{so['tp']}): "
            f"{sub.engine.num_gpu_blocks} KV blocks of {sub.engine.block_size} tokens per "
            f"instance, {sub.kv_source or 'as given'}"
        )
    return notes


def check_pd_options(o: dict[str, Any], explicit: frozenset[str]) -> None:
    """One-line errors for P/D options that do not add up (ConfigError, exit 2)."""
    p, d, n = o["prefill_instances"], o["decode_instances"], o["num_instances"]
    for name in ("prefill_instances", "decode_instances", "pd_prefix_threshold"):
        if o[name] < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {o[name]}")
    for name in (f"{pool}_{key}" for pool in ("prefill", "decode") for key in _POOL_INTS):
        if o[name] < 0:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be >= 0 (0: as the run), got {o[name]}"
            )
    if not pd_enabled(o):
        counts = ("prefill_instances", "decode_instances")  # an explicit 0 is fine
        pd_keys = (
            k
            for k in explicit
            if k.startswith(("pd_", "prefill_", "decode_", "dual_")) and k not in counts
        )
        given = sorted(changed_names(o, explicit, pd_keys))
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(
                f"{flag} needs disaggregation: give --prefill-instances and/or --decode-instances"
            )
        return
    if p + d > n:
        raise ConfigError(
            f"--prefill-instances {p} + --decode-instances {d} exceed --num-instances {n}; "
            "the rest of --num-instances do both"
        )
    if p == n or d == n:
        pool = "prefill" if p == n else "decode"
        raise ConfigError(
            f"--{pool}-instances {n} leaves no instance for the other pool; "
            f"give --num-instances > {n} or fewer {pool} instances"
        )
    require_one_of("--pd-decider", o["pd_decider"], DECIDERS)
    if changed_names(o, explicit, ("pd_prefix_threshold",)) and o["pd_decider"] != (
        "prefix-threshold"
    ):
        raise ConfigError(
            f"--pd-prefix-threshold {o['pd_prefix_threshold']}: no effect with --pd-decider "
            f"{o['pd_decider']}; give --pd-decider prefix-threshold or drop it"
        )
    for pool in ("prefill", "decode"):
        policy = o[f"{pool}_routing_policy"] or o["routing_policy"]
        given = f"{pool}_routing_scorers" in explicit and o[f"{pool}_routing_scorers"]
        if given and policy != "weighted":
            log.warning(
                "--%s-routing-scorers has no effect when the %s pool's routing policy is %r "
                "(only applies to 'weighted')",
                pool,
                pool,
                policy,
            )
    require_finite("--pd-transfer-bandwidth", o["pd_transfer_bandwidth"], unit=" GB/s")
    require_finite(
        "--pd-transfer-base-latency", o["pd_transfer_base_latency"], strict=False, unit=" ms"
    )


def pool_overrides(o: Mapping[str, Any], pool: str) -> dict[str, Any]:
    """The :data:`POOL_KEYS` a pool sets differently from the run (empty: same)."""
    out: dict[str, Any] = {}
    for key in POOL_KEYS:
        value = o[f"{pool}_{key}"]
        if value and value != o[key]:
            out[key] = value
    return out


def resolve_pools(
    raw: Mapping[str, Any], o: Mapping[str, Any], resolve: Callable[[Mapping[str, Any]], Any]
) -> dict[str, Any]:
    """Pool name -> its own plan, for the pools with their own GPU or TP."""
    pools: dict[str, Any] = {}
    for pool in ("prefill", "decode"):
        over = pool_overrides(o, pool)
        if not over:
            continue
        sub = {
            k: v
            for k, v in raw.items()
            if not k.replace("-", "_").startswith(("pd_", "prefill_", "decode_", "dual_"))
        }
        # Drop every spelling of what the pool overrides (an alias such as max_num_seqs
        # would clash with the canonical name); a pool's own latency model replaces the
        # run's --roofline shorthand too.
        dropped = set(over) | ({"roofline"} if "latency_model" in over else set())
        # The shared autoscaling keys (interval, windows, start-up, price) were checked
        # with the run; the pool's own run has no autoscaling of its own, so they would be
        # refused there: they are handed to the pool's plan after it is resolved.
        dropped |= _SHARED_AUTOSCALE
        sub = {k: v for k, v in sub.items() if canonical_name(k) not in dropped}
        sub.update(over)
        if not any(canonical_name(k) == "block_size_in_tokens" for k in sub):
            # One block size for the whole cluster (its routing and transfers count in
            # the run's blocks), also when the run's was chosen for it (MLA on Hopper).
            sub["block_size_in_tokens"] = o["block_size_in_tokens"]
        flags = " ".join(f"--{pool}-{k.replace('_', '-')} {v}" for k, v in over.items())
        try:
            pools[pool] = resolve(sub)
        except ConfigError as exc:
            raise ConfigError(f"{pool} pool ({flags}): {exc}") from None
        pools[pool].options.update({k: o[k] for k in _SHARED_AUTOSCALE})
    return pools


def build_pd_simulator(plan: Any) -> Any:
    """The disaggregated cluster a resolved plan describes (``runner.build_simulator``).

    Instances ``0 .. P-1`` form the prefill pool, ``P .. P+D-1`` the decode pool and the
    rest do both; each pool's instances follow that pool's plan (GPU, TP, KV capacity,
    latency model). The decode and prefill pools each get their own routing policy.
    """
    from inference_sim.catalog.architecture import bundled_architecture
    from inference_sim.catalog.capacity import kv_block_bytes
    from inference_sim.cluster.pd import PDClusterSimulator
    from inference_sim.config.autoscale import pool_autoscale
    from inference_sim.config.policies import build_policies
    from inference_sim.instance.pd import PDInstance

    o = plan.options
    n, p, d = o["num_instances"], o["prefill_instances"], o["decode_instances"]
    # An autoscaled pool has its max instances built; the controller starts p (or d, or
    # the n - p - d dual-role instances). Pools are named by role ("both": dual-role).
    scaled = {}
    for pool, role in (("prefill", "prefill"), ("decode", "decode"), ("dual", "both")):
        got = pool_autoscale(plan, pool, plan.pools.get(pool, plan))
        if got is not None:
            scaled[role] = got
    p_built = scaled["prefill"][0].max_replicas if "prefill" in scaled else p
    d_built = scaled["decode"][0].max_replicas if "decode" in scaled else d
    b_built = scaled["both"][0].max_replicas if "both" in scaled else n - p - d
    roles = ["prefill"] * p_built + ["decode"] * d_built + ["both"] * b_built
    n = len(roles)
    bs = plan.engine.block_size
    policies = build_policies(o, n, bs)

    def pool_routing(pool: str, size: int) -> Any:
        opts = dict(o)
        opts["routing_policy"] = o[f"{pool}_routing_policy"] or o["routing_policy"]
        opts["routing_scorers"] = o[f"{pool}_routing_scorers"] or o["routing_scorers"]
        return build_policies(opts, size, bs).routing

    instances = []
    block_bytes = []
    ranks = []
    for i, role in enumerate(roles):
        sub = plan.pools.get(role, plan)
        inst = PDInstance(
            i, sub.engine, sub.make_latency_model(), order_wait_queue=policies.wait_queue_hooks[i]
        )
        inst.role = role
        instances.append(inst)
        # One link per GPU: each TP rank moves its shard of the KV over its own NIC, so
        # a link carries one GPU's bytes of each block (MLA models: the latent size) at
        # the instance's own TP; a transfer between pools of different TPs is priced
        # from both (PDClusterSimulator._link_bytes: min(TP_p, TP_d) links in parallel).
        # Blackbox pools have no plan architecture: the bundled one, at the KV dtype.
        arch = sub.architecture or with_kv_dtype(
            bundled_architecture(o["model"]), sub.options["kv_cache_dtype"]
        )
        tp = max(1, sub.options["tp"])
        block_bytes.append(kv_block_bytes(arch, tp, bs) if arch is not None else 0.0)
        ranks.append(tp)
    return PDClusterSimulator(
        instances,
        decode_routing=pool_routing("decode", n - p_built),
        prefill_routing=pool_routing("prefill", n - d_built),
        autoscale=scaled,
        decider=o["pd_decider"],
        prefix_threshold=o["pd_prefix_threshold"],
        bandwidth_gbps=o["pd_transfer_bandwidth"],
        base_latency_us=round(o["pd_transfer_base_latency"] * 1000),
        block_bytes=block_bytes,
        ranks=ranks,
        **policies.cluster_arguments(o),
    )


def pd_result_parts(
    sim: Any, outcome: Any, plan: Any = None
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The results' ``pd`` section and the per-request P/D fields (by request index).

    With ``plan``, each pool's summary names the deployment it ran (GPU, TP, step-time
    model, engine limits), since a pool may differ from the run's own.
    """
    from inference_sim.metrics.summary import build_summary

    section = sim.pd_summary()
    section["transfer_bandwidth_gbps"] = sim.bandwidth / 1e3
    section["transfer_base_latency_ms"] = sim.base_latency / 1000.0
    section["bytes_known"] = all(b > 0 for b in sim.block_bytes)
    pools: dict[str, Any] = {}
    for role in ("prefill", "decode", "both"):
        members = [inst for inst in outcome.instances if inst.role == role]
        if not members:
            continue
        s = build_summary(outcome, members, instance_id=f"{role}_pool")
        s["instances"] = len(members)
        s["handed_off"] = sum(m.handed_off for m in members)
        s["accepted_by_transfer"] = sum(m.accepted for m in members)
        if plan is not None:
            sub = plan.pools.get(role, plan)
            s["hardware"] = sub.options["hardware"]
            s["tp"] = sub.options["tp"]
            s["latency_model"] = sub.latency_model
            s["max_num_running_reqs"] = sub.engine.max_num_seqs
            s["max_num_scheduled_tokens"] = sub.engine.max_num_batched_tokens
        pools[role] = s
    section["pools"] = pools
    return section, sim.pd.per_request
