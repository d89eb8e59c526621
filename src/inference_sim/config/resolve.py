"""Resolve user options into a validated, fully specified run.

Resolution order (as the reference): the model id is lower-cased; when no
coefficients are given, the model's default GPU, TP and vLLM version fill the
gaps and the trained coefficient set for that exact combination supplies alpha,
beta and the KV block count (unless ``--total-kv-blocks`` was given). Explicit
coefficients are used as given. Every problem raises :class:`ConfigError` with
one line naming the option.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inference_sim import __version__
from inference_sim.catalog import Catalog, CatalogError, load_catalog
from inference_sim.config.errors import ConfigError
from inference_sim.config.options import BY_NAME, OPTIONS, OptionSpec, canonical_name
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel, LatencyConfigError

WORKLOAD_KINDS = ("distribution", "traces")
ADMISSION_NAMES = ("always-admit", "reject-all", "token-bucket")
ROUTING_NAMES = ("least-loaded", "round-robin")


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

    def make_latency_model(self) -> BlackboxLatencyModel:
        return BlackboxLatencyModel(self.alpha, self.beta)

    def resolved_config(self) -> dict[str, Any]:
        """The run configuration as recorded in results (canonical names)."""
        cfg = {spec.name: self.options[spec.name] for spec in OPTIONS}
        cfg["alpha_coeffs"] = list(self.alpha)
        cfg["beta_coeffs"] = list(self.beta)
        cfg["latency_model"] = self.latency_model
        cfg["total_kv_blocks"] = self.engine.num_gpu_blocks
        cfg["package_version"] = __version__
        return cfg


def _coerce(spec: OptionSpec, value: Any) -> Any:
    """Check and convert one option value; strings are accepted for every kind."""
    flag = spec.flag
    kind = spec.kind
    if kind == "floats":
        items = value.split(",") if isinstance(value, str) else value
        try:
            out = [float(v) for v in items]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{flag} must be a comma-separated list of numbers, got {value!r}"
            ) from None
        return out
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{flag} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{flag} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{flag} must be an integer, got {value!r}")
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
    return os.fspath(value)


def normalize_options(raw: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """Map either spelling to canonical names, check types, fill defaults.

    Returns the full option dict and the set of names the caller gave explicitly.
    """
    given: dict[str, Any] = {}
    for key, value in raw.items():
        name = canonical_name(key)
        if name is None:
            raise ConfigError(f"unknown option {key!r}; see `blis run --help` for the list")
        if name in given:
            raise ConfigError(f"--{name.replace('_', '-')} given twice (under two spellings)")
        given[name] = _coerce(BY_NAME[name], value)
    options = {spec.name: given.get(spec.name, spec.default) for spec in OPTIONS}
    if isinstance(options["alpha_coeffs"], list):
        options["alpha_coeffs"] = list(options["alpha_coeffs"])
    return options, frozenset(given)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_ranges(o: dict[str, Any]) -> None:
    for name in (
        "total_kv_blocks",
        "block_size_in_tokens",
        "max_num_running_reqs",
        "max_num_scheduled_tokens",
        "num_instances",
    ):
        _require(o[name] > 0, f"--{name.replace('_', '-')} must be > 0, got {o[name]}")
    for name in (
        "long_prefill_token_threshold",
        "max_model_len",
        "admission_latency",
        "routing_latency",
        "num_requests",
        "tp",
    ):
        _require(o[name] >= 0, f"--{name.replace('_', '-')} must be >= 0, got {o[name]}")
    _require(o["horizon"] >= 0, f"--horizon must be >= 0, got {o['horizon']}")
    rate = o["rate"]
    _require(math.isfinite(rate) and rate > 0, f"--rate must be a finite number > 0, got {rate}")
    _require(
        o["admission_policy"] in ADMISSION_NAMES,
        f"--admission-policy: unknown policy {o['admission_policy']!r}; "
        f"valid: {', '.join(ADMISSION_NAMES)}",
    )
    _require(
        o["routing_policy"] in ROUTING_NAMES,
        f"--routing-policy: unknown policy {o['routing_policy']!r}; "
        f"valid: {', '.join(ROUTING_NAMES)}",
    )
    if o["admission_policy"] == "token-bucket":
        for name in ("token_bucket_capacity", "token_bucket_refill_rate"):
            v = o[name]
            _require(
                math.isfinite(v) and v > 0,
                f"--{name.replace('_', '-')} must be a finite number > 0, got {v}",
            )


def _resolve_workload(o: dict[str, Any], catalog: Catalog) -> None:
    kind = o["workload"]
    if kind == "traces":
        _require(
            bool(o["workload_traces_filepath"]),
            "--workload-traces-filepath is required when using --workload traces",
        )
        return
    if kind == "distribution":
        return
    if kind not in catalog.preset_names():
        known = ", ".join([*WORKLOAD_KINDS, *catalog.preset_names()])
        raise ConfigError(f"--workload: unknown workload {kind!r}; valid: {known}")


def _resolve_latency(
    o: dict[str, Any], explicit: frozenset[str], catalog: Catalog, notes: list[str]
) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Alpha, beta and KV block count for the run (cli.md 4.2 with clear errors)."""
    model = o["model"]
    latency_model = o["latency_model"]
    _require(
        latency_model in ("auto", "blackbox"),
        f"--latency-model: unknown model {latency_model!r}; valid: auto, blackbox",
    )
    alpha, beta = o["alpha_coeffs"], o["beta_coeffs"]
    for name, values in (("alpha-coeffs", alpha), ("beta-coeffs", beta)):
        _require(
            len(values) >= 3,
            f"--{name} needs at least 3 comma-separated numbers, got {len(values)}",
        )
    blocks = o["total_kv_blocks"]
    if any(alpha) or any(beta):
        return tuple(alpha), tuple(beta), blocks

    defaults = catalog.model_defaults(model)
    if defaults is not None:
        if not o["tp"]:
            o["tp"] = defaults.tp
            notes.append(f"using the catalog's default TP={defaults.tp} for {model}")
        if not o["hardware"]:
            o["hardware"] = defaults.gpu
            notes.append(f"using the catalog's default GPU={defaults.gpu} for {model}")
        if not o["vllm_version"]:
            o["vllm_version"] = defaults.vllm_version
            notes.append(f"using the catalog's default vLLM version={defaults.vllm_version}")
    elif not catalog.has_model(model):
        raise ConfigError(
            f"--model: unknown model {model!r}; run `blis models` to list known models, "
            "or give --alpha-coeffs and --beta-coeffs"
        )
    found = catalog.find_coefficients(model, o["hardware"], o["tp"], o["vllm_version"])
    if found is None:
        combos = [f"{cs.gpu}/TP{cs.tp}/{cs.vllm_version}" for cs in catalog.coefficient_sets(model)]
        hint = "; trained: " + ", ".join(combos) if combos else ""
        raise ConfigError(
            f"no trained coefficients for --model {model} --hardware {o['hardware'] or '?'} "
            f"--tp {o['tp']} --vllm-version {o['vllm_version'] or '?'}{hint}. "
            "Pick a trained combination or give --alpha-coeffs and --beta-coeffs"
        )
    if "total_kv_blocks" not in explicit:
        blocks = found.total_kv_blocks
    return found.alpha, found.beta, blocks


def resolve(raw: Mapping[str, Any]) -> RunPlan:
    """Validate ``raw`` options (either spelling) into a :class:`RunPlan`."""
    options, explicit = normalize_options(raw)
    model = options["model"].strip().lower()
    _require(
        bool(model),
        "--model is required, e.g. --model meta-llama/llama-3.1-8b-instruct (see `blis models`)",
    )
    options["model"] = model
    _check_ranges(options)
    try:
        catalog = load_catalog(options["defaults_filepath"] or None)
    except CatalogError as exc:
        raise ConfigError(f"--defaults-filepath: {exc}") from None
    notes: list[str] = []
    _resolve_workload(options, catalog)
    alpha, beta, blocks = _resolve_latency(options, explicit, catalog, notes)
    _require(blocks > 0, f"--total-kv-blocks must be > 0, got {blocks}")
    options["total_kv_blocks"] = blocks
    try:
        BlackboxLatencyModel(alpha, beta)
    except LatencyConfigError as exc:
        raise ConfigError(str(exc)) from None
    engine = EngineConfig(
        num_gpu_blocks=blocks,
        block_size=options["block_size_in_tokens"],
        max_num_seqs=options["max_num_running_reqs"],
        max_num_batched_tokens=options["max_num_scheduled_tokens"],
        long_prefill_token_threshold=options["long_prefill_token_threshold"],
        enable_prefix_caching=options["enable_prefix_caching"],
        exact_steps=options["exact_steps"],
    )
    return RunPlan(
        options=options,
        explicit=explicit,
        catalog=catalog,
        engine=engine,
        alpha=tuple(alpha),
        beta=tuple(beta),
        latency_model="blackbox",
        notes=notes,
    )
