"""Autoscaling options: checks, defaults and the simulator (docs/autoscaling.md).

Default numbers and where they come from:

* decision interval 15 s, scale-up window 0 s, scale-down window 300 s, tolerance 10%:
  the Kubernetes HorizontalPodAutoscaler defaults;
* replica start-up: 20 s to start the container and the engine (vLLM's own start-up,
  CUDA graph capture included, is typically 15-60 s) plus the whole checkpoint read at
  2 GB/s (a network volume or a local NVMe cache; vLLM's default loader reads every
  tensor whole on each TP rank);
* GPU-hour prices: rounded on-demand list prices of public GPU clouds, 2025 (they vary
  by provider and commitment by a factor of two or more: override with
  ``--autoscale-gpu-hour-price``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from inference_sim.cluster.scaler import METRICS
from inference_sim.config.checks import require_finite, require_one_of
from inference_sim.config.errors import ConfigError
from inference_sim.config.unused import changed_flags, changed_names

log = logging.getLogger("inference_sim")

ENGINE_START_S = 20.0
GPU_HOUR_PRICE = {  # USD per GPU-hour, on-demand, rounded (see the module docstring)
    "H100": 3.00,
    "H200": 3.80,
    "B200": 6.00,
    "A100-SXM": 1.80,
    "A100-40GB": 1.30,
    "H100-PCIe": 2.50,
    "A10G": 1.00,
    "L4": 0.80,
    "L40S": 1.60,
    "MI300X": 2.50,
}
DEFAULT_PRICE = 2.00  # a GPU without a listed price


#: Autoscalable P/D pools, by option prefix ("dual": the dual-role instances).
POOLS = ("prefill", "decode", "dual")


def autoscale_enabled(o: Mapping[str, Any]) -> bool:
    """True for an autoscaled colocated cluster."""
    return o.get("autoscale_max", 0) > 0


def pool_autoscale_enabled(o: Mapping[str, Any]) -> bool:
    """True when a P/D pool is autoscaled."""
    return any(o.get(f"{pool}_autoscale_max", 0) > 0 for pool in POOLS)


def pool_initial(o: Mapping[str, Any], pool: str) -> int:
    """Instances of ``pool`` at start: its count, or for ``dual`` the rest of the run's."""
    if pool == "dual":
        return int(o["num_instances"] - o["prefill_instances"] - o["decode_instances"])
    return int(o[f"{pool}_instances"])


def check_autoscale_options(o: dict[str, Any], explicit: frozenset[str]) -> None:
    """One-line errors for autoscaling options (ConfigError, exit 2)."""
    if o["autoscale_max"] < 0:
        raise ConfigError(f"--autoscale-max must be >= 0, got {o['autoscale_max']}")
    for pool in POOLS:  # a pool's settings without its max would be silently ignored
        own = f"{pool}_autoscale_"
        given = sorted(changed_names(o, explicit, (k for k in explicit if k.startswith(own))))
        given = [k for k in given if k != own + "max"]
        if given and o[f"{pool}_autoscale_max"] <= 0:
            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag} needs --{pool}-autoscale-max > 0")
    pools = pool_autoscale_enabled(o)
    below: list[tuple[str, int, str, int]] = []
    if pools:
        below = _check_pools(o, explicit)
    if not autoscale_enabled(o) and not pools:
        prefixes = ("autoscale_", "replica_")
        given = sorted(changed_names(o, explicit, (k for k in explicit if k.startswith(prefixes))))
        given = [k for k in given if k != "autoscale_max"]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag} needs autoscaling: give --autoscale-max > 0")
        return
    if pools:
        colocated = changed_flags(o, explicit, ("autoscale_min", "autoscale_target"))
        if colocated:  # the colocated cluster's bounds: no P/D pool reads them
            name = colocated[0].split()[0].removeprefix("--autoscale-")
            raise ConfigError(
                f"{colocated[0]}: no effect on autoscaled P/D pools; give each pool's own "
                f"--prefill-autoscale-{name} / --decode-autoscale-{name} / "
                f"--dual-autoscale-{name} (docs/autoscaling.md)"
            )
        _check_shared(o, explicit)
        for args in below:  # after every error: a warning only for a run that will happen
            _below_min(*args)
        return
    _no_scale_to_zero("--autoscale-min", o["autoscale_min"], "autoscale_min" in explicit)
    lo = o["autoscale_min"] or 1
    hi = o["autoscale_max"]
    if lo < 1:
        raise ConfigError(f"--autoscale-min must be >= 1, got {o['autoscale_min']}")
    if lo > hi:
        raise ConfigError(f"--autoscale-min {lo} > --autoscale-max {hi}; min must be <= max")
    start = o["num_instances"]
    if start > hi:
        raise ConfigError(
            f"--num-instances {start} > --autoscale-max {hi}; the cluster starts with "
            "--num-instances replicas, at most the max"
        )
    if o["prefill_instances"] or o["decode_instances"]:
        raise ConfigError(
            "--autoscale-max with --prefill-instances/--decode-instances: autoscale each "
            "pool with --prefill-autoscale-max / --decode-autoscale-max (docs/autoscaling.md)"
        )
    require_one_of("--autoscale-metric", o["autoscale_metric"], METRICS)
    _check_target("--autoscale", o["autoscale_metric"], o["autoscale_target"])
    _check_shared(o, explicit)
    if start < lo:  # after every error: a warning only for a run that will happen
        _below_min("--num-instances", start, "--autoscale-min", lo)


def _check_target(flag: str, metric: str, target: float) -> None:
    """The controller's target: required (0 is "not given"), finite and > 0; at most 1
    for ``kv-utilization`` (a target of 16 there would never scale up)."""
    if target == 0:
        raise ConfigError(
            f"{flag}-target is required with {flag}-max: the value of {flag}-metric "
            f"({metric}) per replica the autoscaler keeps (docs/autoscaling.md)"
        )
    require_finite(f"{flag}-target", target)
    if metric == "kv-utilization" and target > 1:
        raise ConfigError(
            f"{flag}-target {target:g}: the kv-utilization metric is the fraction of the KV "
            "cache in use (0-1); give a fraction such as 0.8"
        )


def _below_min(what: str, start: int, flag: str, lo: int) -> None:
    """A start below the min is not an error (HPA scales up to its min at once) but
    changes the run: say so."""
    log.warning(
        "%s %d is below %s %d: starting with %d ready and %d loading from t=0 "
        "(Kubernetes' HPA raises the count to its minimum at once; the new replicas pay "
        "the start-up)",
        what,
        start,
        flag,
        lo,
        start,
        lo - start,
    )


def _check_pools(o: dict[str, Any], explicit: frozenset[str]) -> list[tuple[str, int, str, int]]:
    """Per-pool bounds, targets and metrics of an autoscaled P/D cluster; returns the pools
    that start below their minimum (a warning, once every check has passed)."""
    below: list[tuple[str, int, str, int]] = []
    if o["autoscale_max"] > 0:
        raise ConfigError(
            "--autoscale-max with --prefill-instances/--decode-instances: autoscale each "
            "pool with --prefill-autoscale-max / --decode-autoscale-max (docs/autoscaling.md)"
        )
    for pool in POOLS:
        hi = o[f"{pool}_autoscale_max"]
        flag = f"--{pool}-autoscale"
        if hi < 0:
            raise ConfigError(f"{flag}-max must be >= 0, got {hi}")
        if hi == 0:
            continue
        given = f"{pool}_autoscale_min" in explicit
        _no_scale_to_zero(f"{flag}-min", o[f"{pool}_autoscale_min"], given)
        lo = o[f"{pool}_autoscale_min"] or 1
        if lo > hi:
            raise ConfigError(f"{flag}-min {lo} > {flag}-max {hi}; min must be <= max")
        start = pool_initial(o, pool)
        if pool == "dual" and start < 1:
            raise ConfigError(
                f"{flag}-max needs dual-role instances at start: give --num-instances > "
                "--prefill-instances + --decode-instances"
            )
        if start > hi and pool == "dual":
            raise ConfigError(
                f"--num-instances leaves {start} dual-role instances > {flag}-max {hi}; "
                "the pool starts with them, at most the max"
            )
        if start > hi:
            raise ConfigError(
                f"--{pool}-instances {start} > {flag}-max {hi}; "
                f"the pool starts with --{pool}-instances replicas, at most the max"
            )
        if start < lo:
            what = "--num-instances leaves" if pool == "dual" else f"--{pool}-instances"
            below.append((what, start, f"{flag}-min", lo))
        m = o[f"{pool}_autoscale_metric"] or o["autoscale_metric"]
        require_one_of(f"{flag}-metric", m, METRICS)
        _check_target(flag, m, o[f"{pool}_autoscale_target"])
    return below


def _no_scale_to_zero(flag: str, value: int, given: bool) -> None:
    """An explicit minimum of 0 asks for scale-to-zero (KEDA, HPA with minReplicas 0),
    which the simulator does not model: refuse it rather than run with 1."""
    if given and value == 0:
        raise ConfigError(
            f"{flag} 0: scale to zero is not modelled (a pool keeps at least one replica "
            "ready); give >= 1, or leave it out for the default 1"
        )
    if value < 0:
        raise ConfigError(f"{flag} must be >= 1, got {value}")


def _check_shared(o: dict[str, Any], explicit: frozenset[str]) -> None:
    """Interval, windows, start-up and price (shared by every autoscaled pool)."""
    for name in ("autoscale_interval",):
        v = o[name]
        if not (math.isfinite(v) and v >= 1e-6):
            raise ConfigError(
                f"--{name.replace('_', '-')} must be a number of seconds >= 0.000001 "
                f"(1 µs, the simulator's time step; Kubernetes' HPA default is 15), got {v}"
            )
    for name in ("autoscale_up_window", "autoscale_down_window"):
        v = o[name]
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be seconds >= 0, got {v}")
    s = o["replica_startup_s"]
    if not (math.isfinite(s) and (s >= 0 or s == -1)):
        raise ConfigError(f"--replica-startup-s must be seconds >= 0 (or -1: derived), got {s}")
    require_finite(
        "--replica-startup-cv", o["replica_startup_cv"], strict=False, unit=" (0: constant)"
    )
    require_finite("--replica-load-bandwidth", o["replica_load_bandwidth"], unit=" GB/s")
    if o["replica_startup_s"] >= 0 and changed_flags(o, explicit, ("replica_load_bandwidth",)):
        raise ConfigError(
            "--replica-load-bandwidth: no effect with --replica-startup-s given (the load "
            "time is derived from the bandwidth only without it); give one of them"
        )
    p = o["autoscale_gpu_hour_price"]
    if not (math.isfinite(p) and (p >= 0 or p == -1)):
        raise ConfigError(
            f"--autoscale-gpu-hour-price must be >= 0 (or -1: the GPU's default), got {p}"
        )


def pool_autoscale(plan: Any, pool: str, sub: Any) -> tuple[Any, int] | None:
    """The controller settings of one P/D pool (``sub``: that pool's plan), or None."""
    from inference_sim.cluster.scaler import AutoscaleConfig

    o = plan.options
    hi = o[f"{pool}_autoscale_max"]
    if hi <= 0:
        return None
    startup, _why = startup_seconds(sub)
    cfg = AutoscaleConfig(
        min_replicas=o[f"{pool}_autoscale_min"] or 1,
        max_replicas=hi,
        metric=o[f"{pool}_autoscale_metric"] or o["autoscale_metric"],
        target=o[f"{pool}_autoscale_target"],
        interval=round(o["autoscale_interval"] * 1e6),
        startup=round(startup * 1e6),
        up_window=round(o["autoscale_up_window"] * 1e6),
        down_window=round(o["autoscale_down_window"] * 1e6),
        gpus_per_replica=max(1, sub.options["tp"]),
        gpu_hour_price=_price(sub),
        startup_cv=o["replica_startup_cv"],
        seed=o["seed"],
        pool="both" if pool == "dual" else pool,
    )
    return cfg, pool_initial(o, pool)


def _price(plan: Any) -> float:
    o = plan.options
    if o["autoscale_gpu_hour_price"] >= 0:
        return float(o["autoscale_gpu_hour_price"])
    gpu = plan.gpu_spec.name if plan.gpu_spec is not None else o["hardware"]
    return GPU_HOUR_PRICE.get(_canonical_gpu(plan, gpu), DEFAULT_PRICE)


def _canonical_gpu(plan: Any, gpu: str) -> str:
    """The catalog's name for ``gpu``: an alias (A100-80) is priced as its GPU."""
    from inference_sim.catalog.errors import CatalogError

    try:
        return plan.catalog.gpu(gpu).name
    except CatalogError:  # a GPU the catalog does not know: priced as given
        return gpu


def startup_seconds(plan: Any) -> tuple[float, str]:
    """A replica's load time and how it was derived."""
    o = plan.options
    if o["replica_startup_s"] >= 0:
        return o["replica_startup_s"], "--replica-startup-s"
    from inference_sim.catalog.architecture import bundled_architecture

    arch = plan.architecture or bundled_architecture(o["model"])
    if arch is None:
        return ENGINE_START_S, "engine start only (model architecture unknown)"
    # vLLM's default loader reads every safetensors tensor whole on each TP rank and
    # slices it on the GPU, so the replica's node reads the whole checkpoint (once, the
    # ranks sharing the page cache), whatever the TP.
    weights = arch.weight_bytes()
    secs = ENGINE_START_S + weights / (o["replica_load_bandwidth"] * 1e9)
    why = (
        f"{ENGINE_START_S:g} s engine start + {weights / 1e9:.2f} GB of weights at "
        f"{o['replica_load_bandwidth']:g} GB/s"
    )
    return secs, why


def build_autoscale_simulator(plan: Any) -> Any:
    """The autoscaled colocated cluster (``runner.build_simulator``)."""
    from inference_sim.cluster.autoscale import AutoscaleClusterSimulator, AutoscaleConfig
    from inference_sim.config.policies import build_policies
    from inference_sim.instance import make_instance
    from inference_sim.instance.lora import share_adapter_ranks

    o = plan.options
    hi = o["autoscale_max"]
    policies = build_policies(o, hi, plan.engine.block_size)
    instances = [
        make_instance(
            i, plan.engine, plan.make_latency_model(), order_wait_queue=policies.wait_queue_hooks[i]
        )
        for i in range(hi)
    ]
    share_adapter_ranks(instances)  # one adapter, one rank cluster-wide (docs/lora.md)
    startup, _why = startup_seconds(plan)
    price = _price(plan)
    cfg = AutoscaleConfig(
        min_replicas=o["autoscale_min"] or 1,
        max_replicas=hi,
        metric=o["autoscale_metric"],
        target=o["autoscale_target"],
        interval=round(o["autoscale_interval"] * 1e6),
        startup=round(startup * 1e6),
        up_window=round(o["autoscale_up_window"] * 1e6),
        down_window=round(o["autoscale_down_window"] * 1e6),
        gpus_per_replica=max(1, o["tp"]),
        gpu_hour_price=price,
        startup_cv=o["replica_startup_cv"],
        seed=o["seed"],
    )
    return AutoscaleClusterSimulator(
        instances,
        autoscale=cfg,
        initial=o["num_instances"],
        routing=policies.routing,
        **policies.cluster_arguments(o),
    )


def autoscale_section(sim: Any, plan: Any) -> dict[str, Any]:
    """The results' ``autoscaling`` section."""
    out = sim.autoscaling_summary()
    out["replica_startup_reason"] = startup_seconds(plan)[1]
    return out


def pool_autoscale_section(sim: Any, plan: Any) -> dict[str, Any]:
    """The ``autoscaling`` section of a P/D run: each pool's figures, with where its
    replicas' start-up time came from (each pool derives its own)."""
    out = sim.autoscaling_summary()
    for name, pool in out["pools"].items():
        sub = plan.pools.get(name, plan)
        pool["replica_startup_reason"] = startup_seconds(sub)[1]
    return out
