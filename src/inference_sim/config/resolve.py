"""Resolve user options into a validated, fully specified run.

Resolution order (as the reference): the model id is lower-cased; when no
coefficients are given, the model's default GPU, TP and vLLM version fill the
gaps and the trained coefficient set for that exact combination supplies alpha,
beta and the KV block count (unless ``--total-kv-blocks`` was given). Explicit
coefficients are used as given. Every problem raises :class:`ConfigError` with
one line naming the option.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from inference_sim.analysis.run import check_analysis_options
from inference_sim.catalog import Catalog, CatalogError, GpuSpec, load_catalog
from inference_sim.catalog.architecture import (
    ModelArchitecture,
    WeightQuantization,
    bundled_architecture,
    bundled_architectures,
    read_model_config_folder,
    renamed_model_id,
)
from inference_sim.catalog.capacity import KvCapacity, derive_kv_blocks, vllm_block_size
from inference_sim.catalog.hardware import with_hardware_config
from inference_sim.catalog.listing import suggested_deployment
from inference_sim.catalog.schema import CoefficientSet
from inference_sim.config.autoscale import (
    autoscale_enabled,
    check_autoscale_options,
    pool_autoscale_enabled,
)
from inference_sim.config.checks import require_finite, require_one_of
from inference_sim.config.errors import ConfigError
from inference_sim.config.fidelity import plan_fidelity
from inference_sim.config.kv_dtype import kv_dtype_bytes, with_kv_dtype
from inference_sim.config.lora import (
    LORA_OPTIONS,
    expand_lora_block,
    lora_gpu_bytes,
    lora_settings,
    normalize_lora,
)
from inference_sim.config.numbers import INT64_MAX, parse_integer
from inference_sim.config.options import (
    ALIASES,
    BY_NAME,
    OPTIONS,
    PLUGIN_OPTIONS,
    OptionSpec,
    canonical_name,
)
from inference_sim.config.pd import (
    check_pd_options,
    main_deployment_unused,
    pd_enabled,
    pool_kv_notes,
    pool_overrides,
    resolve_pools,
)
from inference_sim.config.policies import resolve_policies
from inference_sim.core.inputs import (
    MAX_CONFIG_BYTES,
    InputTooLarge,
    load_yaml,
    read_text,
    results_config_tail,
)
from inference_sim.core.plugins import rebase_plugin_files
from inference_sim.core.rng import MAX_SEED, seed_from_int64
from inference_sim.core.suggest import did_you_mean, unknown_keys
from inference_sim.core.version import __version__
from inference_sim.engine.events import NEVER
from inference_sim.instance.config import EngineConfig
from inference_sim.kv.offload_config import (
    LINK_PRESETS_GBPS,
    TierSettings,
    check_tier_ranges,
    resolve_tier,
)
from inference_sim.latency.base import LatencyModel
from inference_sim.latency.blackbox import LatencyConfigError
from inference_sim.latency.calibrated import (
    SAMPLING_MODES,
    CalibratedCoefficients,
    default_coefficients,
    filtered_sampling,
    load_coefficients,
    penalized_sampling,
)
from inference_sim.latency.fidelity import log_line as fidelity_log_line
from inference_sim.latency.registry import create_latency_model, lookup_latency_model

log = logging.getLogger("inference_sim")

WORKLOAD_KINDS = ("distribution", "traces")
#: The built-in latency model names (``auto`` chooses among them); plug-ins add more.
LATENCY_MODELS = ("auto", "blackbox", "roofline", "calibrated")
_OPTION_NAMES = [*BY_NAME, *ALIASES]
#: Most GPU KV blocks over all instances (block tables cost ~16 bytes a block).
MAX_KV_BLOCKS = 2**27
#: Upper bounds no real deployment reaches (issue 21; docs/troubleshooting.md, "Limits").
#: Each instance is an engine with its own state and time series; the largest fleets
#: serve one model with hundreds to a few thousand replicas.
MAX_INSTANCES = 10_000
#: vLLM's block sizes are 1 to 256 tokens (hybrid models align some to ~2,000); the
#: engine keeps per-token-slot state of a block, so 10^8 would cost gigabytes up front.
MAX_BLOCK_SIZE = 4_096


@dataclass
class RunPlan:
    """A validated run: everything needed to build the simulation, nothing ambiguous."""

    options: dict[str, Any]
    explicit: frozenset[str]
    catalog: Catalog
    engine: EngineConfig
    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    latency_model: str
    notes: list[str] = field(default_factory=list)
    #: Why ``latency_model`` was chosen (shown in the summary, results and report).
    latency_reason: str = ""
    #: True when the run asked for its latency model by name (recorded for replays).
    latency_model_requested: bool = False
    #: True when ``auto`` fell back from trained coefficients (``blis run`` warns).
    latency_fallback: bool = False
    #: Roofline inputs (None in blackbox mode).
    architecture: ModelArchitecture | None = None
    gpu_spec: GpuSpec | None = None
    #: The loaded ``--workload-spec`` (a ``workload.spec.WorkloadSpec``), else None.
    workload_spec: Any = None
    #: Calibrated-model coefficients (``--latency-coeffs`` or the shipped set), else None.
    latency_coeffs: CalibratedCoefficients | None = None
    #: Rows of an in-memory length trace (``simulate(trace=df)``), else None.
    inline_trace: list[Any] | None = None
    #: P/D pools with their own GPU or TP: pool name -> that deployment's plan.
    pools: dict[str, RunPlan] = field(default_factory=dict)
    #: Where the KV block count came from (given, trained or derived; ``--log info``).
    kv_source: str = ""
    #: ``options["max_model_len"]`` is the token budget, set because chunked prefill is
    #: off and no ``--max-model-len`` was given (:func:`_chunked_prefill_length_limit`);
    #: results record the 0 that was given.
    length_limit_from_budget: bool = False

    def latency_context(self) -> dict[str, Any]:
        """What a latency factory may ask for (``latency.registry.CONTEXT_KEYS``)."""
        return latency_context(
            self.options,
            self.architecture,
            self.gpu_spec,
            self.alpha,
            self.beta,
            self.latency_coeffs,
        )

    def make_latency_model(self) -> LatencyModel:
        """A fresh latency model for one instance, built through the latency registry."""
        return create_latency_model(self.latency_model, **self.latency_context())

    def resolved_config(self) -> dict[str, Any]:
        """The run configuration as recorded in results (canonical names)."""
        # P/D and autoscaling keys only when used: other results stay unchanged. An
        # autoscaled P/D pool uses the shared settings (interval, windows, start-up,
        # price, default metric): without them a replay would be another run.
        pools = pool_autoscale_enabled(self.options)
        scaled = autoscale_enabled(self.options) or pools
        used = {"pd": pd_enabled(self.options), "autoscale": scaled}
        cfg = {s.name: self.options[s.name] for s in OPTIONS if used.get(s.group, True)}
        if not cfg.get("aggregate_rate"):  # no spec, or a spec at its own rate
            cfg.pop("aggregate_rate", None)
        if cfg.get("trace_speedup") == 1.0:  # recorded only when it changed the replay
            cfg.pop("trace_speedup", None)
        for name in _CONFIG_RELATIVE_PATHS:
            # Input files as absolute paths: a replay (--config results.json) from any
            # folder reads the files this run read, not others of the same name.
            value = cfg.get(name)
            if isinstance(value, str) and value and value != "-" and not value.startswith("<"):
                cfg[name] = os.path.abspath(value)
        cfg["alpha_coeffs"] = list(self.alpha)
        cfg["beta_coeffs"] = list(self.beta)
        cfg["latency_model"] = self.latency_model
        if self.latency_model_requested:
            # asked for by name: a replay on another deployment keeps asking for it
            cfg["latency_model_requested"] = True
        for name in PLUGIN_OPTIONS:  # file.py:Class plug-ins too
            if name in cfg:
                cfg[name] = rebase_plugin_files(cfg[name], os.getcwd())
        if self.latency_coeffs is not None:
            cfg["calibrated_coefficients"] = self.latency_coeffs.to_dict()
        if self.latency_model == "calibrated" and self.architecture is not None:
            cfg["filtered_sampling"] = filtered_sampling(
                self.architecture, self.options["sampling"]
            )
            cfg["penalized_sampling"] = penalized_sampling(
                self.architecture, self.options["sampling"]
            )
        cfg["total_kv_blocks"] = self.engine.num_gpu_blocks
        if pools:  # the colocated cluster's own bounds and target do not apply to pools
            for name in ("autoscale_min", "autoscale_max", "autoscale_target"):
                cfg.pop(name, None)
        if not self.options["replica_startup_cv"]:  # constant loads: results as they were
            cfg.pop("replica_startup_cv", None)
        if not self.options["dual_autoscale_max"]:  # fixed dual-role instances: as they were
            for name in ("max", "min", "target", "metric"):
                cfg.pop(f"dual_autoscale_{name}", None)
        if self.engine.lora is None:  # results without LoRA stay as they were
            for name in LORA_OPTIONS:
                del cfg[name]
        if self.options["enable_chunked_prefill"]:  # recorded only when off: as they were
            cfg.pop("enable_chunked_prefill", None)
        if self.length_limit_from_budget:
            cfg["max_model_len"] = 0  # as given: a replay derives the same limit again
        cfg["package_version"] = __version__
        return cfg


def _coerce(spec: OptionSpec, value: Any) -> Any:
    """Check and convert one option value; strings are accepted for every kind."""
    flag = spec.flag
    kind = spec.kind
    if kind == "texts":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{flag} must be a list of strings, got {value!r}")
        return [v.strip() for v in items if v.strip()]
    if kind == "floats":
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(value, int | float) and not isinstance(value, bool):
            items = [value]  # one number (simulate(spec_acceptance_rate=0.7))
        try:
            out = [float(v) for v in items]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{flag} must be a comma-separated list of numbers, got {value!r}"
            ) from None
        return out
    if kind is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's too
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{flag} must be true or false, got {value!r}")
    if kind is int:
        number = parse_integer(value)  # 12, 1e3, 1000.0, numpy integers
        if number is None:
            raise ConfigError(f"{flag} must be an integer, got {value!r}")
        # seed and horizon have their own ranges (_check_ranges), with better messages.
        if spec.name not in ("seed", "horizon") and not -INT64_MAX - 1 <= number <= INT64_MAX:
            raise ConfigError(f"{flag} must be an integer within ±{INT64_MAX}, got {number}")
        return number
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{flag} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{flag} must be a number, got {value!r}") from None
    if value is None:
        return ""
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{flag} must be a string, got {value!r}")
    text = os.fspath(value)
    if "\x00" in str(text):  # no file name or policy name holds one; open() would fail
        raise ConfigError(f"{flag} must not contain a NUL character, got {text!r}")
    return text


#: Units ``--horizon`` accepts, in µs (the simulator's tick).
_TIME_UNITS = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def parse_duration_us(text: str, flag: str) -> int:
    """``"500ms"`` -> 500000: µs from a number with an optional unit (us, ms, s, m, h)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zµ]*)\s*", text)
    if m is None or m.group(2) not in ("", *_TIME_UNITS):
        raise ConfigError(
            f"{flag} must be a duration: µs, or a number with a unit "
            f"({', '.join(_TIME_UNITS)}), got {text!r}"
        )
    number, unit = m.groups()
    if number.isdigit() and not unit:
        return int(number)  # exact, however large (the range is checked later)
    us = float(number) * _TIME_UNITS[unit or "us"]
    if not math.isfinite(us):
        raise ConfigError(f"{flag} {text!r} is longer than the simulator can count")
    return round(us)


#: Options whose values are names from a fixed set (or the catalog's presets, stored in
#: lower case), taken in any case as model and GPU names are: ``--arrival Poisson``
#: runs as ``--arrival poisson``, recorded so.
_ANY_CASE_CHOICES = frozenset({"arrival", "sampling", "trace_format", "trace_level", "workload"})


def coerce_option(spec: OptionSpec, value: Any) -> Any:
    """The one value conversion of every option: CLI, ``simulate()``, ``SimConfig``, sweeps."""
    if spec.name == "horizon" and isinstance(value, str):
        value = parse_duration_us(value, "--horizon")
    value = _coerce(spec, value)
    if isinstance(value, str) and (
        spec.name in _ANY_CASE_CHOICES
        # a built-in latency model; a plug-in (module.path:Class) keeps its spelling
        or (spec.name == "latency_model" and value.lower() in LATENCY_MODELS)
    ):
        value = value.lower()
    return value


def normalize_options(raw: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """Map either spelling to canonical names, check types, fill defaults.

    Returns the full option dict and the set of names the caller gave explicitly.
    """
    unknown = [key for key in raw if canonical_name(key) is None]
    if unknown:
        raise ConfigError(
            f"{unknown_keys(unknown, _OPTION_NAMES, 'option')}; see `blis run --help` for the list"
        )
    given: dict[str, Any] = {}
    for key, value in raw.items():
        name = canonical_name(key)
        assert name is not None  # unknown keys were refused above
        if name in given:
            raise ConfigError(f"--{name.replace('_', '-')} given twice (under two spellings)")
        given[name] = coerce_option(BY_NAME[name], value)
    options = {spec.name: given.get(spec.name, spec.default) for spec in OPTIONS}
    if isinstance(options["alpha_coeffs"], list):
        options["alpha_coeffs"] = list(options["alpha_coeffs"])
    options["slo"] = list(options["slo"])
    return options, frozenset(given)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_ranges(o: dict[str, Any], explicit: frozenset[str] = frozenset()) -> None:
    for name in (
        "total_kv_blocks",
        "block_size_in_tokens",
        "max_num_running_reqs",
        "max_num_scheduled_tokens",
        "num_instances",
    ):
        _require(o[name] > 0, f"--{name.replace('_', '-')} must be > 0, got {o[name]}")
    for name, top in (("num_instances", MAX_INSTANCES), ("block_size_in_tokens", MAX_BLOCK_SIZE)):
        _require(
            o[name] <= top,
            f"--{name.replace('_', '-')} must be <= {top:,}, got {o[name]} "
            "(see docs/troubleshooting.md)",
        )
    for name in (
        "long_prefill_token_threshold",
        "max_model_len",
        "admission_latency",
        "routing_latency",
        "num_requests",
        "tp",
    ):
        _require(o[name] >= 0, f"--{name.replace('_', '-')} must be >= 0, got {o[name]}")
    _require(
        0 <= o["horizon"] <= NEVER,
        f"--horizon must be in [0, {NEVER}] µs (default: no limit), got {o['horizon']}",
    )
    if "horizon" in explicit and o["horizon"] < 1_000:
        log.warning(
            "--horizon is %d µs: %s (a number without a unit is in µs: 10s, 500ms)",
            o["horizon"],
            "no event runs" if o["horizon"] == 0 else "under a millisecond, almost nothing runs",
        )
    util = o["gpu_memory_utilization"]
    _require(
        math.isfinite(util) and 0 < util <= 1,
        f"--gpu-memory-utilization must be in (0, 1], got {util}",
    )
    require_finite("--rate", o["rate"])
    rate, count = o["rate"], o["num_requests"]
    synthetic = o["workload"] != "traces" and not o["workload_spec"]
    if synthetic and rate > 0 and count > 1 and (count - 1) / rate > CLOCK_S:
        # Arrivals past the simulator's clock would never come (generation stops there).
        raise ConfigError(
            f"--rate {rate:g} spreads --num-requests {count} over {(count - 1) / rate:.3g} s, "
            f"beyond the simulator's clock ({CLOCK_S:.3g} s, 2^62 µs): raise --rate or "
            "lower --num-requests"
        )
    # The reference's int64 seeds, from a --config file or simulate() too (the command
    # line converts its own before the option checks: config/unused.py).
    o["seed"] = seed_from_int64(o["seed"])
    _require(
        0 <= o["seed"] <= MAX_SEED,
        f"--seed must be in [-2**63, {MAX_SEED}] (a 64-bit seed; a negative one is read as "
        f"two's complement, as the reference's int64), got {o['seed']}",
    )


def _warn_if_budget_below_max_num_seqs(o: dict[str, Any]) -> None:
    """vLLM refuses to start when the token budget is below the running cap
    (``SchedulerConfig.verify_max_model_len``, vllm/config/scheduler.py: "max_num_batched_
    tokens (X) must be greater than or equal to max_num_seqs (Y)"): a full batch of
    decoders, one token each, would not fit one step. The simulator runs it as asked
    (small budgets are common in tests, and the reference accepts them), so it warns."""
    budget, seqs = o["max_num_scheduled_tokens"], o["max_num_running_reqs"]
    if budget < seqs:
        log.warning(
            "--max-num-batched-tokens %d is smaller than --max-num-seqs %d: vLLM refuses to "
            "start (vllm/config/scheduler.py: max_num_batched_tokens must be >= "
            "max_num_seqs); the run goes on as asked",
            budget,
            seqs,
        )


def _token_budgets(o: Mapping[str, Any]) -> dict[str, int]:
    """The token budget of every kind of instance the run has, by the flag that sets it:
    the run's own, and with P/D each pool's (0: as the run's). A budget no instance
    uses (every instance in a pool with its own) is left out."""
    flag = "--max-num-batched-tokens"
    budget = int(o["max_num_scheduled_tokens"])
    if not pd_enabled(o):
        return {flag: budget}
    n, p, d = o["num_instances"], o["prefill_instances"], o["decode_instances"]
    out: dict[str, int] = {}
    if n - p - d > 0 or o.get("dual_autoscale_max", 0) > 0:
        out[flag] = budget
    for pool, count in (("prefill", p), ("decode", d)):
        if count > 0 or o.get(f"{pool}_autoscale_max", 0) > 0:
            own = int(o[f"{pool}_max_num_scheduled_tokens"])
            out[f"--{pool}-max-num-batched-tokens"] = own or budget
    return out or {flag: budget}


def _check_chunked_prefill_off(o: dict[str, Any]) -> None:
    """With chunked prefill off vLLM refuses to start when ``max_num_batched_tokens <
    max_model_len`` (``SchedulerConfig.verify_max_model_len``, vllm/config/scheduler.py):
    a prompt longer than the budget could never be scheduled. The same refusal here,
    naming both flags. (vLLM's own default budget with chunking off is ``max_model_len``,
    vllm/engine/arg_utils.py ``_set_default_args``; the simulator's is 2048 either way.)"""
    if o["enable_chunked_prefill"]:
        return
    max_len = int(o["max_model_len"])
    for flag, budget in _token_budgets(o).items():
        if max_len > budget:
            raise ConfigError(
                f"--max-model-len {max_len} is larger than {flag} {budget} with "
                "--no-enable-chunked-prefill: vLLM refuses to start (a prompt longer than "
                f"the token budget could never be scheduled); raise {flag} to {max_len} or "
                "lower --max-model-len"
            )


def _chunked_prefill_length_limit(o: dict[str, Any], notes: list[str]) -> bool:
    """With chunked prefill off and no ``--max-model-len``, the length limit is the
    smallest token budget: a vLLM operator must set ``max_model_len`` no larger
    (:func:`_check_chunked_prefill_off`), and a longer request (or its recompute after a
    preemption, prompt + tokens delivered) could never be admitted whole, so it would
    wait forever. Such requests are rejected at arrival as ``--max-model-len`` rejects
    them (``rejected_too_long``). Returns True when it set the limit."""
    if o["enable_chunked_prefill"] or int(o["max_model_len"]) > 0:
        return False
    budgets = _token_budgets(o)
    limit = min(budgets.values())
    o["max_model_len"] = limit
    flag = min(budgets, key=lambda k: budgets[k])
    notes.append(
        f"--no-enable-chunked-prefill without --max-model-len: the length limit is {flag} "
        f"{limit} (vLLM requires max_model_len <= max_num_batched_tokens with chunked "
        "prefill off); longer requests (prompt + output) are rejected as too long"
    )
    return True


def _warn_if_unstartable_utilization(util: float) -> None:
    """Above :data:`MAX_STARTABLE_UTILIZATION` vLLM would not start; said only where the
    utilization sizes the KV cache (elsewhere a warning says it has no effect)."""
    if util > MAX_STARTABLE_UTILIZATION:
        log.warning(
            "--gpu-memory-utilization %g: vLLM refuses to start above about %g: the CUDA "
            "context (and any other process) already holds part of the GPU's memory when it "
            "checks that the free memory covers the share asked for "
            '(vllm/v1/worker/gpu_worker.py, "Free memory on device ... is less than desired '
            'GPU memory utilization"); the run goes on as asked',
            util,
            MAX_STARTABLE_UTILIZATION,
        )


#: Highest ``--gpu-memory-utilization`` vLLM starts with: it needs that share of the
#: whole memory free at start-up, and the CUDA context alone takes ~0.5 GiB (0.6 % of an
#: 80 GB GPU, over 1 % of a 24 GB one). Operators do run 0.95-0.98.
MAX_STARTABLE_UTILIZATION = 0.99

#: The simulator's clock in seconds: arrivals are generated up to 2^62 µs.
CLOCK_S = 2**62 / 1e6


def _version_key(version: str) -> str:
    """``vllm/vllm-openai:v0.8.4``, ``v0.8.4`` and ``0.8.4`` all give ``0.8.4``."""
    return version.strip().rsplit(":", 1)[-1].lstrip("vV").lower()


def _normalise_vllm_version(o: dict[str, Any], catalog: Catalog, notes: list[str]) -> None:
    """Map a short ``--vllm-version`` (``v0.8.4``) to the catalog's spelling, or refuse it.

    Versions only select trained coefficients; an unknown one used to fall back to the
    calibrated model silently, changing every latency (issue 21).
    """
    given = o["vllm_version"]
    if not given:
        return
    known: set[str] = set()
    for model in catalog.model_ids():
        known.update(cs.vllm_version for cs in catalog.coefficient_sets(model))
        defaults = catalog.model_defaults(model)
        if defaults is not None:
            known.add(defaults.vllm_version)
    known.discard("")
    if given in known:
        return
    same = sorted(v for v in known if _version_key(v) == _version_key(given))
    if len(same) == 1:
        o["vllm_version"] = same[0]
        notes.append(f"--vllm-version {given} is {same[0]}")
        return
    raise ConfigError(
        f"--vllm-version {given!r}: no trained coefficients for this version; known: "
        f"{', '.join(sorted(known))} (short forms such as v0.8.4 work too)"
    )


def _check_tp(o: dict[str, Any], arch: ModelArchitecture | None) -> None:
    """Refuse a TP vLLM would refuse for the model (issue 21): it must split the heads
    and the feed-forward widths, dense and expert (``ModelArchitecture.tp_problem``)."""
    tp = o["tp"]
    if arch is None or tp <= 1:
        return
    why = arch.tp_problem(tp)
    if why:
        fine = [n for n in range(1, max(arch.heads, 1) + 1) if not arch.tp_problem(n)]
        shown = ", ".join(str(n) for n in fine[:12]) + (", ..." if len(fine) > 12 else "")
        raise ConfigError(f"--tp {tp}: {o['model']}: {why} (vLLM refuses it); valid TP: {shown}")


def _trace_path_selects_replay(
    o: dict[str, Any], explicit: frozenset[str], notes: list[str]
) -> None:
    """A trace file given without ``--workload`` replays it; with another workload, error.

    It used to be ignored silently, running the synthetic workload instead (issue 21).
    """
    path = o["workload_traces_filepath"]
    if not path or o["workload"] == "traces":
        return
    if o["workload_spec"]:
        raise ConfigError(
            f"--workload-traces-filepath {path} and --workload-spec {o['workload_spec']} "
            "both give the requests; give one"
        )
    if "workload" in explicit:
        raise ConfigError(
            f"--workload-traces-filepath {path} is replayed only with --workload traces, "
            f"not --workload {o['workload']}; drop one of them"
        )
    o["workload"] = "traces"
    notes.append(f"--workload-traces-filepath given: replaying {path} (--workload traces)")


def _resolve_workload(o: dict[str, Any], explicit: frozenset[str], catalog: Catalog) -> None:
    """Check ``--workload``; a preset's lengths fill the length options not given.

    So the flags apply on top of a preset (``--workload chatbot --prompt-tokens 2000``)
    and the recorded config holds the lengths that were drawn from.
    """
    kind = o["workload"]
    if kind == "traces":
        _require(
            bool(o["workload_traces_filepath"]),
            "--workload-traces-filepath is required when using --workload traces",
        )
        return
    if not o["workload_spec"]:
        _require(
            o["num_requests"] > 0,
            f"--num-requests must be > 0 for --workload {kind}, got {o['num_requests']}",
        )
    if kind == "distribution":
        return
    if kind not in catalog.preset_names():
        known = ", ".join([*WORKLOAD_KINDS, *catalog.preset_names()])
        raise ConfigError(f"--workload: unknown workload {kind!r}; valid: {known}")
    preset = catalog.preset(kind)
    for name in preset.__dataclass_fields__:
        if name in o and name not in explicit:
            o[name] = getattr(preset, name)
    for what in ("prompt", "output"):
        mean, lo, hi = (o[f"{what}_tokens{s}"] for s in ("", "_min", "_max"))
        if f"{what}_tokens" in explicit and not lo <= mean <= hi:
            raise ConfigError(
                f"--{what}-tokens {mean} is outside --workload {kind}'s range [{lo}, {hi}]; "
                f"give --{what}-tokens-min/--{what}-tokens-max too, or use --workload "
                "distribution"
            )


def _model_hint(model: str, catalog: Catalog) -> str:
    """``' (did you mean "org/name"?)'`` for a short or misspelt model id, else ``""``.

    A known id containing ``model`` (``llama-3.1-8b`` in
    ``meta-llama/llama-3.1-8b-instruct``) wins, the shortest first; otherwise the closest
    id by spelling, with or without its organisation part.
    """
    known = sorted({*catalog.model_ids(), *bundled_architectures()})
    containing = sorted((k for k in known if model in k), key=lambda k: (len(k), k))
    if containing:
        return f' (did you mean "{containing[0]}"?)'
    by_name = {k.rsplit("/", 1)[-1]: k for k in known}
    hint = did_you_mean(model.rsplit("/", 1)[-1], by_name)
    if hint:
        short = hint.split('"')[1]
        return f' (did you mean "{by_name.get(short, short)}"?)'
    return did_you_mean(model, known)


def _gpu_spelling(name: str, catalog: Catalog) -> str:
    """The catalog's spelling of GPU ``name``, matched case-insensitively (as models)."""
    spellings = [*catalog.gpu_names(), *(cs.gpu for cs in catalog.coefficient_sets())]
    for g in catalog.gpu_names():
        spellings += catalog.gpu_aliases(g)
    if name in spellings:
        return name
    by_lower = {s.lower(): s for s in sorted(spellings)}
    found = by_lower.get(name.strip().lower())
    if found is not None:
        return found
    try:
        canonical = catalog.match_gpu(name)
    except CatalogError as exc:
        raise ConfigError(f"--hardware: {exc}; or describe it with --hardware-config") from None
    if canonical is None:
        return name
    log.info("--hardware %s: read as %s", name, canonical)
    return canonical


@dataclass
class _Latency:
    """What latency resolution decided."""

    mode: str
    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    blocks: int
    architecture: ModelArchitecture | None = None
    gpu: GpuSpec | None = None
    reason: str = ""
    fallback: bool = False
    #: --alpha-coeffs/--beta-coeffs priced the steps (no trained entry looked up).
    given_coefficients: bool = False
    #: Where the KV block count came from when not derived from GPU memory (then
    #: --gpu-memory-utilization changes nothing); "" when derived.
    kv_from: str = ""
    #: How the count was derived from GPU memory ("" when given or trained).
    kv_derived: str = ""

    @property
    def kv_source(self) -> str:
        """Where the KV block count came from, whichever way (``--log info``)."""
        return self.kv_from or self.kv_derived


def _because(lat: _Latency, reason: str, *, fallback: bool = False) -> _Latency:
    """``lat`` with the reason it was chosen (for the summary, results and report)."""
    return replace(lat, reason=reason, fallback=fallback)


def _trained_blocks_note(found: CoefficientSet) -> str:
    """Where a trained entry's KV block count came from (``--log info``)."""
    if found.tp <= 1:
        return f"{found.instance_kv_blocks} KV blocks from the trained entry"
    return (
        f"{found.instance_kv_blocks} KV blocks per instance: the trained entry's "
        f"{found.total_kv_blocks} (counted over all {found.tp} TP ranks) / TP {found.tp} "
        "(docs/differences.md; --total-kv-blocks overrides)"
    )


def _trained_kv_from(found: CoefficientSet) -> str:
    """``the trained entry H100/TP2 (...)``: where a trained block count came from."""
    return f"the {_trained_reason(found)} ({found.instance_kv_blocks} blocks per instance)"


def _given_kv_from(blocks: int, explicit: frozenset[str]) -> str:
    return f"--total-kv-blocks {blocks}" if "total_kv_blocks" in explicit else ""


def _fill_defaults(o: dict[str, Any], catalog: Catalog, notes: list[str]) -> bool:
    """Fill TP, GPU and vLLM version from the model's catalog default; False if it has none."""
    model = o["model"]
    defaults = catalog.model_defaults(model)
    if defaults is None:
        return False
    if not o["tp"]:
        o["tp"] = defaults.tp
        notes.append(f"using the catalog's default TP={defaults.tp} for {model}")
    if not o["hardware"]:
        o["hardware"] = defaults.gpu
        notes.append(f"using the catalog's default GPU={defaults.gpu} for {model}")
    if not o["vllm_version"]:
        o["vllm_version"] = defaults.vllm_version
        notes.append(f"using the catalog's default vLLM version={defaults.vllm_version}")
    return True


def _tp_needed(why: str, model: str, arch: ModelArchitecture, gpu: GpuSpec) -> str:
    """The message for a run without --tp and no catalog default: which TP the weights
    allow (the smallest power of two whose share fits in 90 % of one GPU's memory)."""
    msg = f"{why} needs --tp (GPUs per instance): {model} has no catalog default deployment"
    weights = arch.weight_bytes()
    memory = gpu.usable_memory_bytes
    if weights > 0 and memory > 0:
        tp = 1
        while tp < 64 and weights / tp > 0.9 * memory:
            tp *= 2
        msg += (
            f"; its weights ({weights / 2**30:.1f} GiB) fit at --tp {tp} on {gpu.name} "
            f"({memory / 2**30:.0f} GiB each), which leaves room for the KV cache"
            if weights / tp <= 0.9 * memory
            else f"; its weights ({weights / 2**30:.1f} GiB) do not fit 64 {gpu.name} GPUs"
        )
    return msg


def _hardware_needed(why: str, model: str, catalog: Catalog, *, tp_too: bool) -> str:
    """The message for a run without --hardware (and maybe --tp) and no catalog default:
    every missing flag at once, with the deployment ``blis models`` lists for the model."""
    msg = f"{why} needs {'--hardware and --tp' if tp_too else '--hardware'}"
    arch = bundled_architecture(model)
    found = suggested_deployment(catalog, arch) if arch is not None else None
    if found is not None:
        gpu, tp = found
        msg += f"; `blis models` suggests --hardware {gpu}" + (f" --tp {tp}" if tp_too else "")
    return msg + f" (known GPUs: {', '.join(catalog.gpu_names())})"


def _architecture(o: dict[str, Any]) -> ModelArchitecture | None:
    """The model's architecture: --model-config-folder, else the bundled one, else None;
    with ``--kv-cache-dtype``'s bytes per KV element."""
    if o["model_config_folder"]:
        try:
            arch = read_model_config_folder(o["model_config_folder"], name=o["model"])
        except CatalogError as exc:
            raise ConfigError(f"--model-config-folder: {exc}") from None
        if arch.generation is None:  # no generation_config.json: the bundled entry's
            known = bundled_architecture(o["model"])
            if known is not None and known.generation is not None:
                arch = replace(arch, generation=known.generation)
    else:
        arch = bundled_architecture(o["model"])
    arch = with_kv_dtype(arch, o["kv_cache_dtype"])
    if arch is not None and _online_quantization(o):
        q = arch.quantization
        if q is not None:  # vLLM refuses a method other than the checkpoint's own
            raise ConfigError(
                f"--quantization fp8: {o['model']} is already quantized "
                f"({q.bytes_per_param:g} bytes per weight, its config.json's method); "
                "leave --quantization out"
            )
        arch = replace(arch, quantization=WeightQuantization(1.0, "linear", w8a8=True))
    return arch


def _online_quantization(o: dict[str, Any]) -> bool:
    """Whether ``--quantization fp8`` asks for FP8 weights at load (``""``: no)."""
    name = str(o["quantization"]).strip().lower()
    if name not in ("", "fp8"):
        raise ConfigError(
            f"--quantization: only fp8 (online FP8 weights) is modelled, got {name!r}; "
            "a checkpoint quantized ahead (AWQ, GPTQ, compressed-tensors) carries its "
            "method in its config.json: give it with --model-config-folder"
        )
    return name == "fp8"


def _resolve_roofline(
    o: dict[str, Any],
    explicit: frozenset[str],
    catalog: Catalog,
    notes: list[str],
    alpha: list[float],
    beta: list[float],
    why: str = "--latency-model roofline",
    mode: str = "roofline",
) -> _Latency:
    """Roofline mode (cli.md 4.3, nothing downloaded; KV blocks from memory if untrained).

    ``why`` starts the messages about missing inputs (the user may not have asked for
    roofline: ``auto`` falls back to it). ``mode`` ``calibrated`` resolves the same
    inputs (architecture, GPU, TP, KV blocks) for the calibrated model, which takes
    its client-side overheads from its coefficients instead of alpha.
    """
    model = o["model"]
    _fill_defaults(o, catalog, notes)
    _require(o["tp"] >= 0, f"{why} needs --tp > 0")
    if not o["hardware"]:
        raise ConfigError(_hardware_needed(why, model, catalog, tp_too=not o["tp"]))
    try:
        gpu = catalog.gpu(o["hardware"])
    except CatalogError as exc:
        raise ConfigError(f"--hardware: {exc}; or describe it with --hardware-config") from None
    arch = _architecture(o)
    if arch is None:
        raise ConfigError(
            f"--model {model}: no bundled architecture for the {mode} model; pass "
            "--model-config-folder DIR with the model's HuggingFace config.json "
            "(`blis models` lists the models that have one)"
        )
    if not o["tp"]:
        raise ConfigError(_tp_needed(why, model, arch, gpu))
    # Before any capacity figure: a TP that cannot split the heads is the problem to
    # report, not the "does not fit" its memory share would give (review 24).
    _check_tp(o, arch)
    _mla_block_size(o, explicit, arch, gpu, notes)
    if arch.dtype_bytes <= 1 and mode == "roofline":
        notes.append(
            f"roofline: {model} has {arch.dtype_bytes:g} byte(s) per parameter "
            "(quantized): weights, KV and activations are all priced at that size"
        )
    if any(beta):
        log.warning(
            f"{mode}: --beta-coeffs are ignored (the step time comes from the {mode} model)"
        )
    blocks = o["total_kv_blocks"]
    kv_from = _given_kv_from(blocks, explicit)
    found = catalog.find_coefficients(model, o["hardware"], o["tp"], o["vllm_version"])
    if found is not None:
        if mode == "roofline" and not any(alpha) and any(found.alpha):
            # A trained alpha is half of a joint fit with its beta (the fit splits each
            # measured ITL between alpha2 and the step freely: alpha2 spans 0-66 ms in
            # the catalog), so it never goes on top of an analytical step (roofline.md).
            notes.append(
                f"roofline: the trained entry's alpha for {found.gpu}/TP{found.tp} "
                f"({found.vllm_version}) is not used: it was fitted together with its own "
                "step time; give --alpha-coeffs for queueing and per-token overheads"
            )
        if _online_quantization(o) and "total_kv_blocks" not in explicit:
            notes.append(
                f"{mode}: the trained entry's KV blocks were measured with 16-bit weights; "
                "--quantization fp8 frees memory, so the count is derived from GPU memory"
            )
            found = None
        sliding = arch.local_attention is not None and arch.local_attention.kind == "sliding"
        if (
            mode == "calibrated"
            and found is not None
            and "total_kv_blocks" not in explicit
            and found.total_kv_blocks > 0
            and not sliding  # vLLM's hybrid cache, which the derivation lacks (gpt-oss)
        ):
            # The calibrated model is vLLM v0.15.1's; a trained entry's count is another
            # version's memory profile (v0.8.4: Qwen2.5-7B H100/TP1 67 659 blocks where
            # v0.15.1 logs 65 352 and the derivation gives 65 329; roofline.md).
            notes.append(
                f"calibrated: KV blocks derived from GPU memory as vLLM v0.15.1 sizes them, "
                f"not the trained entry's {found.instance_kv_blocks} ({found.vllm_version})"
            )
            found = None
        if found is not None and "total_kv_blocks" not in explicit and found.total_kv_blocks > 0:
            notes.append(f"{mode}: {_trained_blocks_note(found)}")
            blocks = _kv_dtype_scaled(found.instance_kv_blocks, o, arch, notes)
            kv_from = _trained_kv_from(found)
    derived = ""
    if "total_kv_blocks" not in explicit and (found is None or found.total_kv_blocks <= 0):
        try:
            cap = _derived_capacity(o, arch, gpu)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        derived = f"derived from GPU memory: {cap.explain()}"
        _warn_if_unstartable_utilization(o["gpu_memory_utilization"])
        if not cap.fits and main_deployment_unused(o):
            # Every instance is in a P/D pool with its own GPU or TP: this deployment
            # runs nowhere, so it need not fit (each pool's own resolution checks its).
            notes.append(
                f"P/D: no instance runs the main deployment {gpu.name}/TP{o['tp']}, which "
                f"would not fit ({cap.explain()}); its block count (1) is a placeholder, "
                "each pool derives its own"
            )
            blocks = 1
        elif not cap.fits:
            raise ConfigError(
                f"{model} does not fit on {gpu.name} at TP={o['tp']} ({cap.explain()}); "
                "vLLM could not start it: use a larger --tp, a GPU with more memory or a "
                "higher --gpu-memory-utilization"
            )
        else:
            if not main_deployment_unused(o):
                _check_max_model_len_fits(cap.blocks, o, model, gpu.name)
            blocks = cap.blocks
            notes.append(f"{mode}: KV cache {derived}")
    if mode != "roofline":
        if any(alpha):
            log.warning(
                f"{mode}: --alpha-coeffs are ignored (client overheads come from its coefficients)"
            )
        return _Latency(
            mode, tuple(alpha), tuple(beta), blocks, arch, gpu, kv_from=kv_from, kv_derived=derived
        )
    if not any(alpha):
        notes.append(
            "roofline: alpha is all zero (no --alpha-coeffs): "
            "no queueing delay or per-token output overhead"
        )
    lat = _Latency("roofline", tuple(alpha), tuple(beta), blocks, arch, gpu)
    return replace(lat, kv_from=kv_from, kv_derived=derived)


def _mla_block_size(
    o: dict[str, Any],
    explicit: frozenset[str],
    arch: ModelArchitecture,
    gpu: GpuSpec,
    notes: list[str],
) -> None:
    """An MLA model on a Hopper GPU runs with vLLM's FlashMLA backend, which forces
    64-token KV blocks (``catalog.capacity.vllm_block_size``): without
    ``--block-size-in-tokens`` the run uses them too, so its block count is the one vLLM
    logs. A given size is simulated as given, with a warning when vLLM would replace it.

    A P/D cluster shares one block size (its transfers and routing count in it): the
    GPUs its instances run on decide, the pools' own and the run's unless no instance
    runs it, so an MLA model's cluster takes 64-token blocks when any of them is Hopper.
    """
    gpus = [] if main_deployment_unused(o) else [gpu.name]
    if pd_enabled(o):
        for pool in ("prefill", "decode"):
            hw = pool_overrides(o, pool).get("hardware")
            if o[f"{pool}_instances"] and hw:
                gpus.append(str(hw))
    size, where = o["block_size_in_tokens"], gpu.name
    for name in gpus:
        forced = vllm_block_size(arch, name, o["block_size_in_tokens"])
        if forced != o["block_size_in_tokens"]:
            size, where = forced, name
            break
    if size == o["block_size_in_tokens"]:
        return
    gpu_name = where
    if "block_size_in_tokens" not in explicit:
        notes.append(
            f"{o['model']} uses multi-head latent attention: on {gpu_name} vLLM runs it with "
            f"the FlashMLA backend, which forces {size}-token KV blocks "
            f"(--block-size-in-tokens {size}; give the flag to choose another)"
        )
        o["block_size_in_tokens"] = size
    elif o["block_size_in_tokens"] % size:
        log.warning(
            "--block-size-in-tokens %d: vLLM would run %s on %s with %d-token blocks (its "
            "FlashMLA backend takes multiples of %d only); the run uses %d as given",
            o["block_size_in_tokens"],
            o["model"],
            gpu_name,
            size,
            size,
            o["block_size_in_tokens"],
        )


def latency_context(
    options: dict[str, Any],
    architecture: ModelArchitecture | None,
    gpu: GpuSpec | None,
    alpha: Any,
    beta: Any,
    coefficients: CalibratedCoefficients | None,
) -> dict[str, Any]:
    """The keyword arguments a latency factory may take (``latency.registry``)."""
    return {
        "architecture": architecture,
        "gpu": gpu,
        "tp": options["tp"],
        "alpha": tuple(alpha),
        "beta": tuple(beta),
        "coefficients": coefficients,
        "sampling": options["sampling"],
        "options": options,
    }


def _warn_given_coefficients(
    alpha: Sequence[float], beta: Sequence[float], explicit: frozenset[str]
) -> None:
    """Given coefficients replace the trained entry as a whole (the reference's rule,
    cli.md 4.2): say so when that surprises -- one list given alone, extra values."""
    for name, values in (("alpha", alpha), ("beta", beta)):
        if len(values) > 3:
            log.warning(
                "--%s-coeffs: only the first 3 values are used, %d given", name, len(values)
            )
    one = [n for n, v in (("alpha", alpha), ("beta", beta)) if any(v)]
    if len(one) == 1:
        other = "beta" if one[0] == "alpha" else "alpha"
        log.warning(
            "--%s-coeffs given without --%s-coeffs: given coefficients replace the trained "
            "entry, so %s is 0,0,0%s%s; give both lists to price a deployment",
            one[0],
            other,
            other,
            " (steps take no time)" if other == "beta" else " (no queueing or output overhead)",
            ""
            if "total_kv_blocks" in explicit
            else " and the KV cache is the --total-kv-blocks default",
        )


def _resolve_latency(
    o: dict[str, Any], explicit: frozenset[str], catalog: Catalog, notes: list[str]
) -> _Latency:
    """Latency mode, alpha, beta and KV block count (cli.md 4.2-4.4, with clear errors).

    ``auto``: explicit alpha/beta coefficients are used as given (blackbox);
    ``--latency-coeffs`` selects the calibrated model. Otherwise, unless
    --model-config-folder or --hardware-config is given, the trained entry for the
    resolved (model, GPU, TP, vLLM version) is used (blackbox). Without a trained entry,
    or with one of those paths, the calibrated model (the shipped coefficient set,
    docs/calibration.md) is used when the model has an architecture (bundled or from the
    folder); otherwise the run stops with an error.
    """
    model = o["model"]
    mode = o["latency_model"]
    inputs = "trained"
    if mode != "auto":
        try:
            inputs = lookup_latency_model(mode).inputs  # a registered name or a plug-in
        except LatencyConfigError as exc:
            raise ConfigError(str(exc)) from None
    if o["roofline"]:
        _require(mode != "blackbox", "--roofline conflicts with --latency-model blackbox")
        mode = "roofline"
    alpha, beta = o["alpha_coeffs"], o["beta_coeffs"]
    for name, values in (("alpha-coeffs", alpha), ("beta-coeffs", beta)):
        _require(
            len(values) >= 3,
            f"--{name} needs at least 3 comma-separated numbers, got {len(values)}",
        )
    blocks = o["total_kv_blocks"]
    if o["latency_coeffs"]:
        _require(
            mode in ("auto", "calibrated"),
            f"--latency-coeffs is for --latency-model calibrated, not {mode}",
        )
        mode = "calibrated"
    if mode == "roofline":
        # One reason for both spellings (--roofline is its shorthand): a results file
        # records both as latency_model roofline and roofline true, so a replay
        # (--config results.json) cannot tell them apart and must give the same reason.
        lat = _resolve_roofline(o, explicit, catalog, notes, alpha, beta)
        return _because(lat, "requested (--latency-model roofline)")
    if mode == "calibrated":
        why = "--latency-model calibrated"
        asked = "--latency-coeffs" if o["latency_model"] == "auto" else why
        lat = _resolve_roofline(o, explicit, catalog, notes, alpha, beta, why, "calibrated")
        return _because(lat, f"requested ({asked})")
    if mode not in ("auto", "blackbox") and inputs == "architecture":
        # Another registered model or a plug-in that prices steps from the architecture.
        why = f"--latency-model {mode}"
        lat = _resolve_roofline(o, explicit, catalog, notes, alpha, beta, why, mode)
        return _because(lat, f"requested ({why})")
    # From here on: trained (or given) alpha/beta coefficients, for blackbox or a
    # registered/plug-in model whose inputs are "trained".
    trained_mode = "blackbox" if mode == "auto" else mode
    if _online_quantization(o):
        _require(
            not (any(alpha) or any(beta)),
            "--quantization fp8 with --alpha-coeffs/--beta-coeffs: given step "
            "coefficients price the checkpoint's own weights; use --latency-model "
            "calibrated or roofline",
        )
        _require(
            mode == "auto",
            f"--quantization fp8 with --latency-model {mode}: trained step times were "
            "measured with the checkpoint's own weights; use --latency-model calibrated "
            "or roofline",
        )
        notes.append("--quantization fp8: calibrated model (trained step times are 16-bit)")
        why = "--quantization fp8 selects the calibrated model, which"
        lat = _resolve_roofline(o, explicit, catalog, notes, alpha, beta, why, "calibrated")
        return _because(lat, "auto: --quantization fp8 given")
    if any(alpha) or any(beta):
        kv_from = _given_kv_from(blocks, explicit) or (
            f"the --total-kv-blocks default {blocks} (--alpha-coeffs/--beta-coeffs given)"
        )
        lat = _Latency(
            trained_mode,
            tuple(alpha),
            tuple(beta),
            blocks,
            kv_from=kv_from,
            given_coefficients=True,
        )
        same = catalog.find_coefficients(model, o["hardware"], o["tp"], o["vllm_version"])
        if same is not None and (list(same.alpha), list(same.beta)) == (list(alpha), list(beta)):
            return _because(lat, _trained_reason(same))  # e.g. a results file replayed
        return _because(lat, "requested (--alpha-coeffs/--beta-coeffs)")
    if mode == "auto" and (o["model_config_folder"] or o["hardware_config"]):
        notes.append("no coefficients, and a model or hardware config given: calibrated model")
        why = (
            "without coefficients, --model-config-folder/--hardware-config select the "
            "calibrated model, which"
        )
        lat = _resolve_roofline(o, explicit, catalog, notes, alpha, beta, why, "calibrated")
        return _because(lat, "auto: --model-config-folder/--hardware-config given")

    has_defaults = _fill_defaults(o, catalog, notes)
    if not has_defaults and not catalog.has_model(model):
        if mode == "auto" and bundled_architecture(model) is not None:
            why = f"{model} has no trained coefficients; its calibrated model"
            notes.append(f"{model} has no trained coefficients: calibrated model")
            lat = _resolve_roofline(o, explicit, catalog, notes, alpha, beta, why, "calibrated")
            return _because(lat, f"auto fallback: {model} has no trained entry", fallback=True)
        if bundled_architecture(model) is not None:  # known, but never trained
            raise ConfigError(
                f"--model {model}: no trained coefficients for --latency-model {mode} (the "
                "catalog has its architecture only); use --latency-model calibrated or "
                "roofline, or give --alpha-coeffs and --beta-coeffs"
            )
        raise ConfigError(
            f"--model: unknown model {model!r}{_model_hint(model, catalog)}; "
            "run `blis models` to list known models, "
            "or give --alpha-coeffs and --beta-coeffs, or use --latency-model roofline "
            "with --model-config-folder"
        )
    found = catalog.find_coefficients(model, o["hardware"], o["tp"], o["vllm_version"])
    if found is None:
        if mode == "auto" and o["hardware"] and o["tp"] > 0 and bundled_architecture(model):
            notes.append(
                f"no trained coefficients for {model} on {o['hardware']}/TP{o['tp']}: "
                "calibrated model"
            )
            why = "--latency-model calibrated"
            lat = _resolve_roofline(o, explicit, catalog, notes, alpha, beta, why, "calibrated")
            # with their versions: the entries match on it
            trained = ", ".join(
                sorted(
                    {
                        f"{cs.gpu}/TP{cs.tp}/{cs.vllm_version}"
                        for cs in catalog.coefficient_sets(model)
                    }
                )
            )
            reason = f"auto fallback: no trained entry for {o['hardware']}/TP{o['tp']}"
            if not o["vllm_version"]:  # entries match on the version (spec cli.md 4.2)
                reason += " without a vLLM version (no catalog default; give --vllm-version)"
            else:
                reason += f" at vLLM version {o['vllm_version']}"
            return _because(
                lat, reason + (f" (trained: {trained})" if trained else ""), fallback=True
            )
        combos = [f"{cs.gpu}/TP{cs.tp}/{cs.vllm_version}" for cs in catalog.coefficient_sets(model)]
        hint = "; trained: " + ", ".join(combos) if combos else ""
        raise ConfigError(
            f"no trained coefficients for --model {model} --hardware {o['hardware'] or '?'} "
            f"--tp {o['tp']} --vllm-version {o['vllm_version'] or '?'}{hint}. "
            "Pick a trained combination, give --alpha-coeffs and --beta-coeffs, "
            "or use --latency-model calibrated or roofline"
        )
    kv_from = _given_kv_from(blocks, explicit)
    if "total_kv_blocks" not in explicit:
        notes.append(_trained_blocks_note(found))
        blocks = _kv_dtype_scaled(found.instance_kv_blocks, o, bundled_architecture(model), notes)
        kv_from = _trained_kv_from(found)
    lat = _Latency(trained_mode, found.alpha, found.beta, blocks, kv_from=kv_from)
    return _because(lat, _trained_reason(found))


def _check_max_model_len_fits(blocks: int, o: dict[str, Any], model: str, gpu: str) -> None:
    """vLLM refuses to start when its KV cache cannot hold one request of
    ``--max-model-len`` tokens (``check_enough_kv_cache_memory``, vllm/v1/core/
    kv_cache_utils.py); a derived capacity gets the same refusal instead of a run that
    drops most requests as unservable. A count the user gives is simulated as given."""
    max_len = int(o["max_model_len"])
    tokens = blocks * int(o["block_size_in_tokens"])
    if max_len > 0 and tokens < max_len:
        raise ConfigError(
            f"the KV cache derived for {model} on {gpu} at TP={o['tp']} holds {tokens} tokens "
            f"({blocks} blocks), less than one request of --max-model-len {max_len}; vLLM "
            "refuses to start such a deployment: lower --max-model-len, use a larger --tp, a "
            "GPU with more memory or a higher --gpu-memory-utilization, or give "
            "--total-kv-blocks"
        )


def _warn_if_default_max_model_len_unstartable(
    o: dict[str, Any], arch: ModelArchitecture | None, blocks: int, model: str
) -> None:
    """Without ``--max-model-len`` the simulator sets no length limit (DECISIONS.md), but
    vLLM does: its default ``max_model_len`` is the model's ``max_position_embeddings``
    (vllm/config/model.py), and v1's ``check_enough_kv_cache_memory`` (vllm/v1/core/
    kv_cache_utils.py) refuses to start when the KV cache cannot hold one request that
    long. Such a deployment runs only with a shorter ``--max-model-len``, so say so
    instead of simulating it silently as if vLLM served it as configured; whichever way
    the block count was obtained (derived, trained, given), as the check is about the
    cache vLLM would have. Nothing is said when the length is unknown (0)."""
    limit = arch.max_position_embeddings if arch is not None else 0
    tokens = blocks * int(o["block_size_in_tokens"])
    if limit <= 0 or int(o["max_model_len"]) > 0 or tokens <= 0 or tokens >= limit:
        return
    where = f"{model} on {o['hardware']} at TP={o['tp']}" if o["hardware"] else model
    log.warning(
        "vLLM at its default max_model_len (%d, the model's max_position_embeddings) would "
        "refuse to start %s: its KV cache holds only %d tokens (%d blocks of %d); an "
        "operator would pass --max-model-len %d or less. The simulator runs it anyway, with "
        "no length limit (give --max-model-len to reject longer requests as vLLM would)",
        limit,
        where,
        tokens,
        blocks,
        int(o["block_size_in_tokens"]),
        tokens,
    )


def _derived_capacity(
    o: dict[str, Any], arch: ModelArchitecture, gpu: GpuSpec, utilization: float | None = None
) -> KvCapacity:
    """The KV capacity GPU memory leaves for ``arch`` on ``gpu`` under the run's options
    (``catalog.capacity.derive_kv_blocks``; ValueError for unusable figures);
    ``utilization`` replaces ``--gpu-memory-utilization`` (1.0: the whole memory)."""
    return derive_kv_blocks(
        arch,
        gpu,
        o["tp"],
        block_size=o["block_size_in_tokens"],
        gpu_memory_utilization=(
            o["gpu_memory_utilization"] if utilization is None else utilization
        ),
        max_num_batched_tokens=o["max_num_scheduled_tokens"],
        lora_bytes=lora_gpu_bytes(o, arch),
    )


def _warn_if_given_blocks_do_not_fit(
    o: dict[str, Any], arch: ModelArchitecture | None, gpu: GpuSpec | None, model: str
) -> None:
    """A given ``--total-kv-blocks`` (or one recorded in a results file) is simulated as
    given (the reference does), but vLLM could not run it when the weights and working
    memory exceed the GPU (it could not load the model), or when the blocks need more
    memory than the whole GPU leaves after them (``--num-gpu-blocks-override`` allocates
    the count as given and runs out of memory): say so rather than print latencies for
    it silently."""
    if arch is None or gpu is None:
        return
    try:
        cap = _derived_capacity(o, arch, gpu)
        full = _derived_capacity(o, arch, gpu, utilization=1.0)
    except ValueError:  # no memory figure, a bad TP or block size: nothing to judge
        return
    blocks = int(o["total_kv_blocks"])
    if not cap.fits:
        log.warning(
            "%s does not fit on %s at TP=%s (%s): vLLM could not load it; the run uses "
            "--total-kv-blocks %s as given",
            model,
            gpu.name,
            o["tp"],
            cap.explain(),
            blocks,
        )
    elif blocks > full.blocks:
        left = full.budget_bytes - full.weight_bytes - full.reserve_bytes
        log.warning(
            "--total-kv-blocks %d x %.3f MiB per block = %.2f GiB of KV cache per GPU, more "
            "than %s leaves at TP=%s for %s (%.2f GiB: %.2f GiB of memory, weights %.2f "
            "GiB/GPU, reserve %.2f GiB; at most %d blocks): vLLM "
            "(--num-gpu-blocks-override) would run out of memory; the run uses %d as given",
            blocks,
            full.block_bytes / 2**20,
            blocks * full.block_bytes / 2**30,
            gpu.name,
            o["tp"],
            model,
            left / 2**30,
            full.memory_bytes / 2**30,
            full.weight_bytes / 2**30,
            full.reserve_bytes / 2**30,
            full.blocks,
            blocks,
        )


#: Block size (tokens) of every trained entry's KV count: vLLM's default on CUDA GPUs.
TRAINED_BLOCK_SIZE = 16


def _kv_dtype_scaled(
    blocks: int, o: dict[str, Any], arch: ModelArchitecture | None, notes: list[str]
) -> int:
    """A trained block count (measured in 16-token blocks with KV in the model's dtype)
    under ``--kv-cache-dtype`` and ``--block-size-in-tokens``: the same memory holds
    dtype / KV-dtype times the blocks, and 16 / block-size times as many blocks."""
    kv_bytes = kv_dtype_bytes(o["kv_cache_dtype"])
    model_bytes = arch.dtype_bytes if arch is not None else 2.0
    if kv_bytes and kv_bytes != model_bytes:
        scaled = int(blocks * model_bytes / kv_bytes)
        notes.append(
            f"--kv-cache-dtype {o['kv_cache_dtype']}: the trained entry's {blocks} blocks held "
            f"{model_bytes:g}-byte KV; {scaled} blocks of {kv_bytes:g}-byte KV fit the same "
            "memory"
        )
        blocks = scaled
    size = int(o["block_size_in_tokens"])
    if size > 0 and size != TRAINED_BLOCK_SIZE:
        scaled = blocks * TRAINED_BLOCK_SIZE // size
        notes.append(
            f"--block-size-in-tokens {size}: the trained entry's {blocks} blocks were "
            f"{TRAINED_BLOCK_SIZE}-token blocks; {scaled} blocks of {size} tokens fit the "
            "same memory"
        )
        blocks = scaled
    return blocks


def _trained_reason(found: Any) -> str:
    """``trained entry H100/TP2 (vllm/vllm-openai:v0.8.4)``: the coefficient set that ran."""
    return f"trained entry {found.gpu}/TP{found.tp} ({found.vllm_version})"


#: Longest time (µs) one step, one queueing delay or one token overhead may take: an hour
#: means a wrong coefficient or hardware figure (and times must stay far below NEVER).
MAX_LATENCY_US = 3_600_000_000


def _check_latency_scale(model: LatencyModel, o: dict[str, Any]) -> None:
    """ConfigError unless a typical step and the request overheads are priced in whole µs,
    at least 0 and at most an hour; a model (a plug-in) that fails to price them is a
    one-line error too, not a traceback or a crash in the middle of the run."""
    import numpy as np

    from inference_sim.core.request import Request
    from inference_sim.latency.base import StepBatch

    # a user's model, unwrapped: this probe reports a bad value itself (latency/registry.py)
    model = getattr(model, "unchecked_model", model)
    n = min(o["max_num_scheduled_tokens"], 2048)
    req = Request(0, 0, np.zeros(n, dtype=np.int32), np.zeros(1, dtype=np.int32))
    prefill = StepBatch()
    prefill.add(req, n, True)
    decode = StepBatch()
    decode.decode_tokens = 1
    decode.decode_context_sum = n
    checks = (
        (f"one step of {n} prompt tokens", lambda: model.step_time(prefill)),
        (f"one decode step at a {n}-token context", lambda: model.step_time(decode)),
        (f"the queueing delay of a {n}-token prompt", lambda: model.queueing_time(req)),
        ("the per-output-token overhead", model.output_token_time),
    )
    label = getattr(model, "name", "") or o["latency_model"]
    for what, measure in checks:
        try:
            t: float = measure()
        except OverflowError:  # int() of an infinite time
            t = math.inf
        except ValueError as exc:  # int() of NaN; else a plug-in's own error
            if "NaN" not in str(exc):
                msg = f"the {label} latency model failed to price {what}: ValueError: {exc}"
                raise ConfigError(msg) from None
            t = math.inf
        except Exception as exc:  # a plug-in's own failure: one line, not a traceback
            raise ConfigError(
                f"the {label} latency model failed to price {what}: {type(exc).__name__}: {exc}"
            ) from None
        if t != math.inf and (isinstance(t, bool) or not isinstance(t, numbers.Integral)):
            # The engine adds times to integer µs ticks; a float would fail mid-run.
            raise ConfigError(
                f"the {label} latency model prices {what} at {t!r}: latency models return "
                "whole microseconds (an int), see docs/python-api.md"
            )
        if t < 0:
            raise ConfigError(
                f"the {label} latency model prices {what} at {t} µs: times must be >= 0"
            )
        if not t <= MAX_LATENCY_US:
            shown = f"{t:.3g} µs" if math.isfinite(t) else "an infinite time"
            raise ConfigError(
                f"the {label} latency model prices {what} at {shown}, more than an hour: "
                "check --alpha-coeffs/--beta-coeffs, --hardware-config or "
                "--model-config-folder figures"
            )


# Input files a config file may name relative to its own folder.
_CONFIG_RELATIVE_PATHS = (
    "workload_traces_filepath",
    "workload_spec",
    "model_config_folder",
    "hardware_config",
    "defaults_filepath",
    "policy_config",
    "latency_coeffs",
)


#: Autoscaling minimums whose default (0) means 1; an explicit 0 is refused.
_RECORDED_DEFAULT_MINIMUMS = (
    "autoscale_min",
    "prefill_autoscale_min",
    "decode_autoscale_min",
    "dual_autoscale_min",
)


def load_run_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Run options from a ``--config`` file (canonical names; ConfigError on problems).

    The file is a YAML (or JSON) mapping of option names, spelled as flags without the
    dashes (``num_instances``, ``max_num_seqs``, ...). Relative input paths in it are
    relative to the file's folder. A results file (``--results-path``) works too: its
    ``config`` block is used, without ``results_path``, ``export_trace`` and
    ``package_version``, so the run is repeated exactly; the figures it records that
    the run derived for its deployment (step-time model, block size, KV block count)
    are left out, so that they are derived again for another deployment (review 24).
    """
    return _read_run_config(path)[0]


def _read_run_config(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bool]:
    """:func:`load_run_config`'s options and whether the file was a results file."""
    import yaml

    where = f"--config {os.fspath(path)}"
    try:
        # A results file: only its config section, read from the end (issue 21's
        # limits); anything else is read whole, as small as run configs are.
        doc = results_config_tail(path)
        if doc is None or "package_version" not in doc["config"]:
            doc = load_yaml(read_text(path, MAX_CONFIG_BYTES))
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except InputTooLarge as exc:
        raise ConfigError(
            f"{where}: cannot read: {exc}; a results file is read from its end, where "
            "blis writes its config section, so keep that section last"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    return _options_from_document(doc, where, folder)


def results_config_options(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The options a results file's ``config`` section (``res.config``) repeats, read as
    ``--config results.json`` reads them (:func:`load_run_config`); ``where`` names it
    in errors and warnings."""
    doc = {"config": {"package_version": "", **dict(config)}}
    return _options_from_document(doc, where, os.getcwd())[0]


def _options_from_document(doc: Any, where: str, folder: str) -> tuple[dict[str, Any], bool]:
    """Options of a parsed ``--config`` document (a run config or a results file) and
    whether it was a results file; ``folder`` anchors a run config's relative paths."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of option names to values")
    from inference_sim.core.inputs import is_replicates_document

    if is_replicates_document(doc):
        runs = doc["runs"]
        first = runs[0] if runs and isinstance(runs[0], dict) else {}
        if not isinstance(first.get("config"), dict):
            raise ConfigError(f"{where}: a --seeds/--replicates results file without run configs")
        doc = first  # every run has the same options but its seed: repeat the first
        log.info("%s: a --seeds/--replicates results file; using its first run's options", where)
    from_results = isinstance(doc.get("config"), dict) and "package_version" in doc["config"]
    requested = False  # the results file's latency model was asked for by name
    if not from_results and {"completed_requests", "requests"} <= set(doc):
        raise ConfigError(
            f"{where}: a results file without its config section (trimmed, or written by "
            "another tool): it cannot be replayed; give the run's options instead"
        )
    if from_results:
        doc = {
            k: v
            for k, v in doc["config"].items()
            if k not in ("results_path", "export_trace", "package_version")
        }
        # The coefficients a calibrated run used are recorded, not an option: the run
        # replays with the shipped set or its --latency-coeffs file, as it was made.
        used = doc.pop("calibrated_coefficients", None)
        requested = doc.pop("latency_model_requested", False) is True
        for derived in ("filtered_sampling", "penalized_sampling"):  # from --sampling
            doc.pop(derived, None)
        # A recorded minimum of 0 is the default (1), not an asked scale-to-zero, which
        # an explicit 0 is (config/autoscale.py refuses it): leave it out.
        for name in _RECORDED_DEFAULT_MINIMUMS:
            if doc.get(name) == 0:
                del doc[name]
        if isinstance(used, dict):
            coeffs_file = doc.get("latency_coeffs")
            try:
                now = (
                    load_coefficients(coeffs_file) if coeffs_file else default_coefficients()
                ).to_dict()
            except (LatencyConfigError, OSError):
                now = None  # the replay itself reports a missing or broken file
            if now is not None and {k: v for k, v in used.items() if k != "meta"} != {
                k: v for k, v in now.items() if k != "meta"
            }:
                what = (
                    f"its --latency-coeffs file {coeffs_file} has changed since"
                    if coeffs_file
                    else "they are not this version's shipped set"
                )
                log.warning(
                    "%s: the run's calibrated coefficients differ from what a replay would "
                    "use (%s); save its config's calibrated_coefficients to a file and give "
                    "it with --latency-coeffs to replay them",
                    where,
                    what,
                )
    unknown = [
        key
        for key in doc
        if key != "package_version"
        and not (key == "lora" and not from_results)
        and canonical_name(str(key)) is None
    ]
    if unknown:  # all of them at once: a file with two typos takes one round to fix
        raise ConfigError(
            f"{where}: {unknown_keys(unknown, _OPTION_NAMES, 'option')}; see `blis run --help`"
        )
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "package_version":
            continue
        if key == "lora" and not from_results:  # the lora: block (docs/lora.md)
            for opt, item in expand_lora_block(value, where).items():
                out.setdefault(opt, item)
            continue
        name = canonical_name(str(key))
        assert name is not None  # unknown keys were refused above
        if name in out:
            raise ConfigError(f"{where}: {name} given twice (under two spellings)")
        if (
            not from_results
            and name in _CONFIG_RELATIVE_PATHS
            and isinstance(value, str)
            and value
            and not os.path.isabs(value)
        ):
            value = os.path.join(folder, value)
        if not from_results and name in PLUGIN_OPTIONS:
            value = rebase_plugin_files(value, folder)
        out[name] = value
    if from_results:
        out = _without_derived_figures(out, requested)
    return out, from_results


#: What a results file records as resolved for the run's own deployment: the step-time
#: model and its trained coefficients, the KV block size (MLA models on Hopper: 64) and
#: the KV block count. In this order: each may follow from the ones before.
_DERIVED_MODEL = ("latency_model", "roofline", "alpha_coeffs", "beta_coeffs")
#: A model the user asked for by name keeps it; only its coefficients were derived.
_DERIVED_COEFFICIENTS = ("alpha_coeffs", "beta_coeffs")
#: The catalog's default vLLM version of the recorded model (another model has its own).
_DERIVED_VERSION = ("vllm_version",)
#: The CPU tier's block count (from --cpu-offload-gib) and transfer speed (from
#: --kv-transfer-link): each model and TP sizes them anew.
_DERIVED_CPU_BLOCKS = ("kv_cpu_blocks",)
_DERIVED_TRANSFER = ("kv_transfer_bandwidth",)
_DERIVED_BLOCK_SIZE = ("block_size_in_tokens",)
_DERIVED_BLOCKS = ("total_kv_blocks",)


def _without_derived_figures(out: dict[str, Any], requested: bool = False) -> dict[str, Any]:
    """A results file's options without the figures the run derived for its deployment.

    A results file records the step-time model, coefficients, block size and block count
    the run resolved for its GPU, TP and model; given back as options they would apply
    to another deployment (``--config r.json --hardware L40S``, a plan's candidate, a
    sweep's grid, a P/D pool with its own GPU or TP) as if the user had given them. Those
    the recorded options re-derive the same without were derived, not given: leave them
    out so that every run (and pool) derives its own. Those that differ were given and
    stay (``merge_config_file`` warns when a flag that sizes the KV cache changes). An
    unchanged replay derives them again, the same: its results are the same.

    ``requested`` (the record's ``latency_model_requested``): the run asked for its
    latency model by name (``--latency-model calibrated``), which stays asked for even
    where ``auto`` would pick the same one, so that a replay on another deployment does
    not take whatever ``auto`` picks there.
    """
    model_group = _DERIVED_COEFFICIENTS if requested else _DERIVED_MODEL
    for group in (
        _DERIVED_VERSION,
        model_group,
        _DERIVED_BLOCK_SIZE,
        _DERIVED_BLOCKS,
        _DERIVED_CPU_BLOCKS,
        _DERIVED_TRANSFER,
    ):
        if not any(k in out for k in group):
            continue
        trial = {k: v for k, v in out.items() if k not in group}
        try:
            with _quiet():  # the replay itself gives its warnings, once
                plan = resolve(trial)
        except ConfigError:
            continue
        derived = {
            "vllm_version": plan.options["vllm_version"],
            "latency_model": plan.latency_model,
            "alpha_coeffs": list(plan.alpha),
            "beta_coeffs": list(plan.beta),
            "block_size_in_tokens": plan.options["block_size_in_tokens"],
            "total_kv_blocks": plan.options["total_kv_blocks"],
            "kv_cpu_blocks": plan.options["kv_cpu_blocks"],
            "kv_transfer_bandwidth": plan.options["kv_transfer_bandwidth"],
        }
        recorded = {k: out.get(k, v) for k, v in derived.items()}
        recorded["alpha_coeffs"] = list(recorded["alpha_coeffs"])
        recorded["beta_coeffs"] = list(recorded["beta_coeffs"])
        if recorded == derived:
            out = trial
    return out


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _quiet() -> Iterator[None]:
    """The package's log records dropped inside (a trial resolution's warnings and
    notes would otherwise be given twice)."""
    drop = _DropAll()
    # First, so that no other filter sees the records (each_warning_once's would count
    # a dropped warning as given and drop the replay's own).
    log.filters.insert(0, drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


#: Options that size a GPU's KV cache: a results file's given block count was chosen for
#: the values it records, so changing one of them with the count kept deserves a warning.
_KV_SIZING = (
    "model",
    "hardware",
    "tp",
    "block_size_in_tokens",
    "kv_cache_dtype",
    "gpu_memory_utilization",
    "quantization",
    "max_num_scheduled_tokens",
    "model_config_folder",
    "hardware_config",
)


def _same_option(name: str, a: Any, b: Any) -> bool:
    """Whether two spellings of option ``name`` mean the same value (``h100``/``H100``,
    ``"2"``/``2``); unreadable values count as different (the run reports them)."""
    spec = BY_NAME[name]
    try:
        x, y = coerce_option(spec, a), coerce_option(spec, b)
    except (ConfigError, TypeError, ValueError):
        return False
    if isinstance(x, str) and isinstance(y, str):
        return x.strip().lower() == y.strip().lower()
    return bool(x == y)


def _warn_kept_blocks(
    where: str, recorded: dict[str, Any], given: Mapping[str, Any], named: set[str | None]
) -> None:
    """A results file's given ``total_kv_blocks`` is kept when the command line changes
    the deployment it was given for: say which flag changes the KV cache's size."""
    if "total_kv_blocks" not in recorded or "total_kv_blocks" in named:
        return
    by_name = {canonical_name(k): v for k, v in given.items()}
    changed = []
    for name in _KV_SIZING:
        if name not in by_name:
            continue
        before = recorded.get(name, BY_NAME[name].default)
        if not _same_option(name, by_name[name], before):
            changed.append(f"--{name.replace('_', '-')} {by_name[name]} (recorded: {before})")
    if changed:
        log.warning(
            "%s: the run's --total-kv-blocks %s was given for its own deployment "
            "and is kept, though %s changes the KV cache's size; give --total-kv-blocks to "
            "set another",
            where,
            recorded["total_kv_blocks"],
            ", ".join(changed),
        )


def _without_old_model_defaults(
    recorded: dict[str, Any], given: Mapping[str, Any], named: set[str]
) -> dict[str, Any]:
    """A results file replayed with another ``--model``: the GPU, TP and vLLM version it
    records that are the recorded model's catalog defaults (the run did not choose them,
    the catalog did) are left out, so that the new model takes its own defaults (a
    Llama-3.1-8B run's v0.8.4 made gpt-oss-20b miss its trained H100/TP2 entry)."""
    new_model = next((v for k, v in given.items() if canonical_name(k) == "model"), None)
    old_model = recorded.get("model")
    if not new_model or not isinstance(old_model, str) or str(new_model) == old_model:
        return recorded
    try:
        defaults = load_catalog(recorded.get("defaults_filepath") or None).model_defaults(old_model)
    except (CatalogError, ConfigError, OSError):  # the replay itself reports a bad file
        return recorded
    if defaults is None:
        return recorded
    implied = {"hardware": defaults.gpu, "tp": defaults.tp, "vllm_version": defaults.vllm_version}
    out = dict(recorded)
    for name, value in implied.items():
        if name not in named and _same_option(name, out.get(name), value):
            del out[name]
    return out


def merge_config_file(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with its ``config`` entry (a file path) expanded; ``raw``'s own values win."""
    given = dict(raw)
    path = given.pop("config", None)
    if not path:
        return given
    file_options, from_results = _read_run_config(path)
    return merge_file_options(given, file_options, from_results, f"--config {os.fspath(path)}")


def merge_file_options(
    given: Mapping[str, Any], file_options: dict[str, Any], from_results: bool, where: str
) -> dict[str, Any]:
    """``given`` options on top of a config's ``file_options`` (``from_results``: read
    from a results file, named ``where``): :func:`merge_config_file` after the reading."""
    given = dict(given)
    named = {canonical_name(k) for k in given}
    if from_results:
        file_options = _without_old_model_defaults(file_options, given, named)
        _warn_kept_blocks(where, file_options, given, named)
    # An option given on the command line replaces the file's other spelling of the same
    # figure (--kv-cpu-blocks vs a recorded --cpu-offload-gib, ...), which would clash.
    for a, b in _ALTERNATIVES:
        if a in named:
            named.add(b)
        elif b in named:
            named.add(a)
    merged = {k: v for k, v in file_options.items() if k not in named}
    merged.update(given)
    return merged


#: Pairs of options that set one figure two ways (given both, a run is refused).
_ALTERNATIVES = (
    ("kv_cpu_blocks", "cpu_offload_gib"),
    ("kv_transfer_bandwidth", "kv_transfer_link"),
)


def _resolve_kv_tier(
    o: dict[str, Any], explicit: frozenset[str], arch: ModelArchitecture | None
) -> TierSettings:
    """The tiered KV cache's settings (docs/kv-offload.md); derived figures go to ``o``."""
    wanted = o["kv_cpu_blocks"] > 0 or o["cpu_offload_gib"] > 0 or o["kv_transfer_link"]
    if arch is None and wanted:
        arch = _architecture(o)  # for bytes per block and per token, when known
    try:
        tier = resolve_tier(o, explicit, arch)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    o["kv_cpu_blocks"] = tier.cpu_blocks
    o["kv_transfer_bandwidth"] = tier.transfer_bandwidth
    given = {"kv_transfer_bandwidth", "kv_transfer_link"} & explicit
    if tier.cpu_blocks > 0 and not given and arch is not None:
        per_token = arch.kv_bytes_per_token(max(1, o["tp"]))  # one GPU's bytes
        gbps = tier.transfer_bandwidth * per_token / 1e3
        if gbps > 2 * max(LINK_PRESETS_GBPS.values()):
            log.warning(
                "--kv-transfer-bandwidth %g tokens/µs (the reference's default) moves %s's KV "
                "at %.0f GB/s per GPU, far above any host link (the pcie-gen5 preset: 50 "
                "GB/s); give --kv-transfer-link pcie-gen5 (or pcie-gen4) to price CPU hits "
                "as a real server would (docs/kv-offload.md)",
                tier.transfer_bandwidth,
                arch.name,
                gbps,
            )
    return tier


def _known_gpu(catalog: Catalog, name: str) -> GpuSpec | None:
    """The catalog's GPU of that name; None when none is named or it is unknown."""
    if not name:
        return None
    try:
        return catalog.gpu(name)
    except CatalogError:
        return None


def _lora_settings(
    o: dict[str, Any], catalog: Catalog, arch: ModelArchitecture | None, gpu: GpuSpec | None
) -> Any:
    """LoRA settings; sizes need the architecture and GPU even in blackbox mode."""
    if arch is None:
        arch = _architecture(o)
    if gpu is None and o["hardware"]:
        try:
            gpu = catalog.gpu(o["hardware"])
        except CatalogError:
            gpu = None
    if o["max_loras"] > 0 and gpu is None:
        # Given coefficients without --hardware: nothing names the GPU whose memory
        # bandwidth prices the adapters' per-step reads (docs/lora.md), so they are 0.
        log.warning(
            "LoRA without --hardware: the adapters' per-step weight reads (SGMV) are not "
            "priced (they need the GPU's memory bandwidth); give --hardware%s",
            "" if o["tp"] else " and --tp",
        )
    return lora_settings(o, arch, gpu)


def resolve(raw: Mapping[str, Any]) -> RunPlan:
    """Validate ``raw`` options (either spelling) into a :class:`RunPlan`.

    ``raw["config"]``, if present, names a run-config file whose options apply unless
    ``raw`` gives them too (see :func:`load_run_config`).
    """
    from inference_sim.config.inline import split_inline

    # workload_spec as a mapping, a trace as a DataFrame (simulate(), run configs)
    merged = merge_config_file(raw)
    given, inline = split_inline(merged)
    options, explicit = normalize_options(given)
    model = options["model"].strip().lower()
    _require(
        bool(model),
        "--model is required, e.g. --model meta-llama/llama-3.1-8b-instruct (see `blis models`)",
    )
    renamed = renamed_model_id(model)
    if renamed != model:
        log.info("--model %s: the repository is now %s; using it", model, renamed)
        model = renamed
    options["model"] = model
    kv_dtype_bytes(options["kv_cache_dtype"])  # one clear line for a bad value
    options["kv_cache_dtype"] = str(options["kv_cache_dtype"]).strip().lower()
    options["quantization"] = str(options["quantization"]).strip().lower()
    _check_ranges(options, explicit)
    _warn_if_budget_below_max_num_seqs(options)
    check_pd_options(options, explicit)
    _check_chunked_prefill_off(options)
    check_autoscale_options(options, explicit)
    try:
        check_tier_ranges(options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # Policy bundle, policy names (registries, plug-ins), scorers: config/policies.py.
    resolve_policies(options, explicit)
    from inference_sim.config.unused import warn_unused_refresh_interval

    warn_unused_refresh_interval(options, explicit)  # e.g. with round-robin routing
    # Tracing, counterfactual K and fitness weights: checked before the run (analysis/).
    check_analysis_options(options)
    # --slo: goodput objectives (metrics/goodput.py), spelled as for `blis plan`.
    from inference_sim.metrics.goodput import check_objectives
    from inference_sim.metrics.slo import parse_slos

    check_objectives(parse_slos(options["slo"]))
    try:
        catalog = load_catalog(options["defaults_filepath"] or None)
    except CatalogError as exc:
        raise ConfigError(f"--defaults-filepath: {exc}") from None
    if options["hardware_config"]:
        try:
            catalog = with_hardware_config(catalog, options["hardware_config"])
        except CatalogError as exc:
            raise ConfigError(f"--hardware-config: {exc}") from None
    notes: list[str] = []
    if options["hardware"]:
        options["hardware"] = _gpu_spelling(options["hardware"], catalog)
    if inline.trace is None:  # an in-memory trace: workload/plan.py checks it
        _trace_path_selects_replay(options, explicit, notes)
    _resolve_workload(options, explicit, catalog)
    from inference_sim.workload.plan import resolve_workload_options

    workload_spec = resolve_workload_options(options, explicit, inline)
    from inference_sim.config.unused import refuse_unused_flags

    refuse_unused_flags(options, explicit, inline)  # e.g. --rate with a timed trace
    lora_on = normalize_lora(options, workload_spec)
    _normalise_vllm_version(options, catalog, notes)
    lat = _resolve_latency(options, explicit, catalog, notes)
    _check_tp(options, lat.architecture or bundled_architecture(options["model"]))
    alpha, beta, blocks = lat.alpha, lat.beta, lat.blocks
    if "total_kv_blocks" in explicit and blocks > 0 and not main_deployment_unused(options):
        _warn_if_given_blocks_do_not_fit(
            options,
            lat.architecture
            or with_kv_dtype(bundled_architecture(model), options["kv_cache_dtype"]),
            lat.gpu or _known_gpu(catalog, options["hardware"]),
            model,
        )
    _require(blocks > 0, f"--total-kv-blocks must be > 0, got {blocks}")
    _require(
        blocks * options["num_instances"] <= MAX_KV_BLOCKS,
        f"--total-kv-blocks {blocks} x --num-instances {options['num_instances']}: more than "
        f"{MAX_KV_BLOCKS:,} KV blocks in all, which the simulator cannot hold in memory "
        "(16 bytes a block); give fewer blocks or instances",
    )
    # A deployment's own cache (not the --total-kv-blocks default that given coefficients
    # fall back on, nor the placeholder of a P/D main deployment no instance runs).
    if (not lat.given_coefficients or "total_kv_blocks" in explicit) and not (
        main_deployment_unused(options)
    ):
        _warn_if_default_max_model_len_unstartable(
            options, lat.architecture or bundled_architecture(model), blocks, model
        )
    options["total_kv_blocks"] = blocks
    # asked for by name (not "auto"): a replay on another deployment keeps asking for it
    requested = options["latency_model"] not in ("auto", "") or lat.reason.startswith("requested")
    options["latency_model"] = lat.mode
    options["roofline"] = lat.mode == "roofline"
    require_one_of("--sampling", options["sampling"], SAMPLING_MODES)
    if options["sampling"] != "auto" and lat.mode != "calibrated":  # warned, as alpha/beta
        log.warning(
            "--sampling has no effect: it only changes the calibrated model, not %s", lat.mode
        )
    coeffs: CalibratedCoefficients | None = None
    if lat.mode == "calibrated":
        try:
            path = options["latency_coeffs"]
            coeffs = load_coefficients(path) if path else default_coefficients()
        except LatencyConfigError as exc:
            raise ConfigError(f"--latency-coeffs: {exc}") from None
        assert lat.gpu is not None
    try:
        # Built once here so a bad model (or plug-in) fails before the run starts.
        probe = create_latency_model(
            lat.mode,
            **latency_context(options, lat.architecture, lat.gpu, alpha, beta, coeffs),
        )
    except LatencyConfigError as exc:
        raise ConfigError(str(exc)) from None
    _check_latency_scale(probe, options)
    tier = _resolve_kv_tier(options, explicit, lat.architecture)
    notes.extend(tier.notes)
    from inference_sim.config.unused import refuse_unused_feature_flags, warn_unused_memory_flag

    refuse_unused_feature_flags(options, explicit, cpu_tier=tier.cpu_blocks > 0, lora_on=lora_on)
    warn_unused_memory_flag(options, explicit, lat.kv_from)  # trained or given block count
    if (
        kv_dtype_bytes(options["kv_cache_dtype"])
        and lat.architecture is None
        and "total_kv_blocks" in explicit
        and not pd_enabled(options)
        and options["kv_cpu_blocks"] <= 0
    ):
        log.warning(
            "--kv-cache-dtype %s has no effect here: the %s model's step times do not read "
            "KV bytes and --total-kv-blocks is given (docs/engine.md)",
            options["kv_cache_dtype"],
            lat.mode,
        )
    from inference_sim.config.speculative import resolve_speculative

    def _draft_latency(arch: ModelArchitecture) -> LatencyModel:
        # The draft model runs on the target's GPUs with the same kind of model
        # (blackbox has no architecture, so its draft model is priced by the roofline).
        kind = lat.mode if lat.mode in ("roofline", "calibrated") else "roofline"
        gpu = lat.gpu
        if gpu is None:
            try:
                gpu = catalog.gpu(options["hardware"])
            except CatalogError as exc:
                raise LatencyConfigError(f"--hardware: {exc}") from None
        ctx = latency_context(options, arch, gpu, alpha, beta, coeffs)
        return create_latency_model(kind, **ctx)

    target_arch = lat.architecture
    if target_arch is None and options["speculative_method"]:
        target_arch = bundled_architecture(model)  # the draft heads' depth ratio
    speculative = resolve_speculative(options, explicit, target_arch, _draft_latency)
    _require(
        speculative is None or not lora_on,
        "--speculative-method cannot be combined with LoRA adapters (--max-loras, adapters "
        "in the workload); run them separately",
    )
    engine = EngineConfig(
        num_gpu_blocks=blocks,
        block_size=options["block_size_in_tokens"],
        max_num_seqs=options["max_num_running_reqs"],
        max_num_batched_tokens=options["max_num_scheduled_tokens"],
        long_prefill_token_threshold=options["long_prefill_token_threshold"],
        enable_prefix_caching=options["enable_prefix_caching"],
        enable_chunked_prefill=options["enable_chunked_prefill"],
        exact_steps=options["exact_steps"],
        kv_cpu_blocks=tier.cpu_blocks,
        kv_offload_threshold=tier.offload_threshold,
        kv_transfer_bandwidth=tier.transfer_bandwidth,
        kv_transfer_base_latency=tier.transfer_base_latency,
        kv_block_bytes=tier.block_bytes,
        lora=_lora_settings(options, catalog, lat.architecture, lat.gpu) if lora_on else None,
        speculative=speculative,
    )
    _require(
        not pd_enabled(options) or (speculative is None and not lora_on),
        "--prefill-instances/--decode-instances cannot be combined with "
        + ("--speculative-method" if speculative is not None else "LoRA adapters (--max-loras)")
        + " yet; run them separately (docs/disaggregation.md)",
    )
    pools = resolve_pools(merged, options, resolve) if pd_enabled(options) else {}
    length_limit_from_budget = _chunked_prefill_length_limit(options, notes)
    if lat.given_coefficients:
        # after every check: a warning only for a run that will happen
        _warn_given_coefficients(options["alpha_coeffs"], options["beta_coeffs"], explicit)
    plan = RunPlan(
        pools=pools,
        options=options,
        explicit=explicit,
        catalog=catalog,
        engine=engine,
        alpha=tuple(alpha),
        beta=tuple(beta),
        latency_model=lat.mode,
        latency_model_requested=requested,
        notes=notes,
        latency_reason=lat.reason,
        latency_fallback=lat.fallback,
        architecture=lat.architecture,
        gpu_spec=lat.gpu,
        workload_spec=workload_spec,
        latency_coeffs=coeffs,
        inline_trace=inline.trace,
        kv_source=lat.kv_source,
        length_limit_from_budget=length_limit_from_budget,
    )
    if pd_enabled(options):
        notes.extend(pool_kv_notes(plan, pools))
    fid = plan_fidelity(plan)  # both pools of a P/D run (their GPU, TP, latency model)
    if fid is not None:
        notes.append(fidelity_log_line(fid))
    return plan
