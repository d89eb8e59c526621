"""``SimConfig``: a typed pydantic (v2) model of the run options, built from the options table.

Every field comes from :data:`inference_sim.config.options.OPTIONS` (name, type, default,
help, aliases), and every value is checked by the same conversion the CLI and
``simulate()`` use (:func:`inference_sim.config.resolve.coerce_option`), so the model,
the ``blis run`` flags, ``simulate(**options)``, sweep files and ``--config`` files share
one definition and cannot drift apart. Options with a fixed set of values get an enum
from the module that owns the set (latency models, sampling modes, trace formats,
arrival processes, trace levels).

``SimConfig.model_json_schema()`` (``blis config schema``) is the JSON Schema of a run-
config YAML file: editors validate and complete them with it. The vLLM-style aliases are
listed as properties of their own. Only the fields a caller set are passed on
(:meth:`SimConfig.to_options`), so catalog defaults still fill the rest as for the CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic import model_validator as _model_validator

from inference_sim.config.errors import ConfigError
from inference_sim.config.options import ALIASES, BY_NAME, OPTIONS, OptionSpec, canonical_name

DURATIONS = ("horizon",)
"""Integer µs options that also take a duration with a unit (``coerce_option`` parses it)."""

INLINE_MAPPINGS = ("workload_spec",)
"""Path options that may hold their document inline: a workload spec as a mapping."""

SCHEMA_ID = "https://inference-sim.invalid/schema/run-config.json"
"""``$id`` of the schema (a name, not a place: nothing is fetched)."""


def option_choices() -> dict[str, tuple[str, ...]]:
    """Allowed values of the options that have a fixed set, from the modules that own them."""
    from inference_sim.analysis.trace import TRACE_LEVELS
    from inference_sim.config.resolve import LATENCY_MODELS
    from inference_sim.latency.calibrated import SAMPLING_MODES
    from inference_sim.workload.arrivals import ARRIVAL_PROCESSES
    from inference_sim.workload.formats import TRACE_FORMATS

    return {
        "latency_model": tuple(LATENCY_MODELS),
        "sampling": tuple(SAMPLING_MODES),
        "trace_format": tuple(TRACE_FORMATS),
        "arrival": tuple(ARRIVAL_PROCESSES),
        "trace_level": tuple(TRACE_LEVELS),
    }


def _coercer(spec: OptionSpec) -> BeforeValidator:
    def convert(value: Any) -> Any:
        from inference_sim.config.resolve import coerce_option

        if spec.name in INLINE_MAPPINGS and isinstance(value, Mapping):
            return dict(value)
        value = coerce_option(spec, value)  # ConfigError is a ValueError: pydantic reports it
        if spec.name == "latency_model" and value != "auto":
            _check_latency_name(value)
        return value

    return BeforeValidator(convert)


#: Options whose fixed set is the built-ins only: a registered or file plug-in
#: (``my_latency.py:TokensPerStep``) is valid too, and checked where it is resolved.
OPEN_CHOICES = ("latency_model",)


def _check_latency_name(name: str) -> None:
    """A built-in or registered latency model, or a plug-in spelling (``module:Class``,
    loaded only when the run resolves it): anything else is a typo, refused here."""
    from inference_sim.latency.registry import is_plugin, latency_model_names

    if name not in latency_model_names() and not is_plugin(name):
        raise ConfigError(
            f"valid: auto, {', '.join(latency_model_names())} or a plug-in as module.path:ClassName"
        )


def _annotation(spec: OptionSpec, choices: tuple[str, ...] | None) -> Any:
    if choices and spec.name in OPEN_CHOICES:
        base: Any = Literal[choices] | str  # type: ignore[valid-type]
    elif choices:
        base = Literal[choices]  # type: ignore[valid-type]
    elif spec.kind == "floats":
        base = list[float] | str  # a list, or comma-separated text as on the command line
    elif spec.kind == "texts":
        base = list[str] | str  # repeatable flag: a list, or one value
    elif spec.name in DURATIONS:
        base = int | str  # µs, or a number with a unit ("10s", "500ms")
    elif spec.name in INLINE_MAPPINGS:
        base = str | dict[str, Any]
    elif spec.kind in (int, float, bool, str):
        base = spec.kind
    else:  # a kind this module does not know yet: accept what the coercion accepts
        base = int | float | str
    return Annotated[base, _coercer(spec)]


class _Base(BaseModel):
    """Common behaviour of the generated model (see :data:`SimConfig`)."""

    model_config = ConfigDict(extra="forbid", validate_default=False, frozen=True)

    def __init__(self, /, **options: Any) -> None:
        """``SimConfig(tp="two")`` raises :class:`ConfigError` with the one line the CLI
        gives (``--tp must be an integer, got 'two'``), as ``simulate()`` and
        :meth:`from_options` do, not pydantic's multi-line ``ValidationError``: one
        ``except ConfigError`` catches bad input whichever door it came in by.
        (``model_validate`` is pydantic's own and keeps its error type.)"""
        try:
            super().__init__(**options)
        except ValidationError as exc:
            raise ConfigError(one_line(exc)) from None

    @_model_validator(mode="before")
    @classmethod
    def _canonical_keys(cls, data: Any) -> Any:
        """Either spelling (``max_num_seqs``, ``max-num-seqs``) -> the canonical name; a
        results file's ``config`` (``res.config``) -> the options it repeats."""
        if not isinstance(data, Mapping):
            return data
        from inference_sim.core.suggest import unknown_keys

        if is_results_config(data):
            data = read_results_config(data)
        if "config" in data:
            raise ValueError(
                "config is not a SimConfig field (it names a file to read options from): "
                "use SimConfig.from_file(path), or simulate(config=path)"
            )
        unknown = [key for key in data if canonical_name(str(key)) is None]
        if unknown:
            known = [*BY_NAME, *ALIASES]
            raise ValueError(
                f"{unknown_keys(unknown, known, 'option')}; see `blis run --help` for the list"
            )
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = canonical_name(str(key))
            assert name is not None  # unknown keys were refused above
            if name in out:
                raise ValueError(f"--{name.replace('_', '-')} given twice (under two spellings)")
            out[name] = value
        return out

    def to_options(self) -> dict[str, Any]:
        """The options the caller set (canonical names), for ``simulate``/``resolve``."""
        given = self.model_fields_set
        return {name: getattr(self, name) for name in type(self).model_fields if name in given}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """Validate ``options``; bad input raises :class:`ConfigError` with one line. A
        results file's ``config`` (``res.config``) gives the options it repeats, as
        :meth:`from_file` on the results file does."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            raise ConfigError(one_line(exc)) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Self:
        """Options of a run-config YAML file (or a results file's ``config``)."""
        from inference_sim.config.resolve import load_run_config

        return cls.from_options(load_run_config(path))


def one_line(exc: ValidationError) -> str:
    """The first problem of a ValidationError as ``--flag: message``."""
    err = exc.errors(include_url=False)[0]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
    if not loc or msg.startswith("--"):
        return msg
    flag = "--" + loc[0].replace("_", "-")
    return f"{flag}: {msg}, got {err.get('input')!r}"


def _build() -> type[_Base]:
    choices = option_choices()
    fields: dict[str, Any] = {}
    for spec in OPTIONS:
        default = list(spec.default) if isinstance(spec.default, list) else spec.default
        extra: dict[str, Any] = {"x-flag": spec.flag, "x-group": spec.group}
        if spec.aliases:
            extra["x-aliases"] = list(spec.aliases)
        fields[spec.name] = (
            _annotation(spec, choices.get(spec.name)),
            Field(default=default, description=spec.help, json_schema_extra=extra),
        )
    model = create_model("SimConfig", __base__=_Base, __module__=__name__, **fields)
    model.__doc__ = (
        "Run options of inference-sim (one field per `blis run` flag; see docs/python-api.md)."
    )
    return model


if TYPE_CHECKING:
    # What type checkers see: the generated model's fields, typed as they are stored
    # (after the CLI's conversion). Keyword arguments are not checked statically (aliases,
    # dashed spellings, numpy integers and strings are accepted at run time, and bad ones
    # raise ConfigError). The field list is generated by static_field_lines() and kept in
    # step with OPTIONS by tests/test_api_review26.py.

    class SimConfig(_Base):
        """Run options of inference-sim (one field per `blis run` flag)."""

        def __init__(self, /, **options: Any) -> None: ...

        # BEGIN static fields (generated by static_field_lines())
        model: str
        hardware: str
        tp: int
        vllm_version: str
        latency_model: str
        latency_coeffs: str
        sampling: str
        roofline: bool
        model_config_folder: str
        hardware_config: str
        alpha_coeffs: list[float]
        beta_coeffs: list[float]
        defaults_filepath: str
        total_kv_blocks: int
        block_size_in_tokens: int
        quantization: str
        kv_cache_dtype: str
        gpu_memory_utilization: float
        max_num_running_reqs: int
        max_num_scheduled_tokens: int
        long_prefill_token_threshold: int
        max_model_len: int
        enable_prefix_caching: bool
        enable_chunked_prefill: bool
        kv_cpu_blocks: int
        kv_offload_threshold: float
        kv_transfer_bandwidth: float
        kv_transfer_base_latency: int
        cpu_offload_gib: float
        speculative_method: str
        num_speculative_tokens: int
        spec_acceptance_rate: list[float]
        spec_acceptance_concentration: float
        speculative_model: str
        spec_ngram_cpu_us: int
        kv_transfer_link: str
        max_loras: int
        max_cpu_loras: int
        max_lora_rank: int
        lora_adapters: list[str]
        lora_cpu_gpu_bandwidth: float
        lora_cpu_gpu_latency: int
        lora_disk_bandwidth: float
        lora_disk_latency: int
        lora_step_overhead: float
        workload: str
        workload_traces_filepath: str
        workload_spec: str | dict[str, Any]
        trace_format: str
        trace_block_size: int
        trace_speedup: float
        export_trace: str
        rate: float
        aggregate_rate: float
        arrival: str
        burstiness: float
        num_requests: int
        prefix_tokens: int
        prompt_tokens: int
        prompt_tokens_stdev: int
        prompt_tokens_min: int
        prompt_tokens_max: int
        output_tokens: int
        output_tokens_stdev: int
        output_tokens_min: int
        output_tokens_max: int
        num_instances: int
        admission_policy: str
        admission_latency: int
        routing_policy: str
        routing_latency: int
        token_bucket_capacity: float
        token_bucket_refill_rate: float
        routing_scorers: str
        snapshot_refresh_interval: int
        priority_policy: str
        scheduler: str
        policy_config: str
        prefill_instances: int
        decode_instances: int
        pd_decider: str
        pd_prefix_threshold: int
        pd_transfer_bandwidth: float
        pd_transfer_base_latency: float
        prefill_routing_policy: str
        decode_routing_policy: str
        prefill_routing_scorers: str
        decode_routing_scorers: str
        prefill_hardware: str
        prefill_tp: int
        decode_hardware: str
        decode_tp: int
        prefill_latency_model: str
        decode_latency_model: str
        prefill_max_num_running_reqs: int
        decode_max_num_running_reqs: int
        prefill_max_num_scheduled_tokens: int
        decode_max_num_scheduled_tokens: int
        prefill_autoscale_max: int
        prefill_autoscale_min: int
        prefill_autoscale_target: float
        prefill_autoscale_metric: str
        decode_autoscale_max: int
        decode_autoscale_min: int
        decode_autoscale_target: float
        decode_autoscale_metric: str
        dual_autoscale_max: int
        dual_autoscale_min: int
        dual_autoscale_target: float
        dual_autoscale_metric: str
        autoscale_min: int
        autoscale_max: int
        autoscale_metric: str
        autoscale_target: float
        autoscale_interval: float
        autoscale_up_window: float
        autoscale_down_window: float
        replica_startup_s: float
        replica_load_bandwidth: float
        replica_startup_cv: float
        autoscale_gpu_hour_price: float
        seed: int
        horizon: int
        results_path: str
        check_invariants: bool
        exact_steps: bool
        timeseries_interval: int
        trace_level: str
        trace_output: str
        counterfactual_k: int
        summarize_trace: bool
        fitness_weights: str
        slo: list[str]
        # END static fields

else:
    SimConfig = _build()
    """The pydantic model of every ``blis run`` option (built from the options table)."""


def static_field_lines() -> list[str]:
    """``name: type`` of every field as stored, for the ``TYPE_CHECKING`` class above."""
    choices = option_choices()
    lines = []
    for spec in OPTIONS:
        if spec.name in choices:
            kind = "str"
        elif spec.kind == "floats":
            kind = "list[float]"
        elif spec.kind == "texts":
            kind = "list[str]"
        elif spec.name in DURATIONS:
            kind = "int"
        elif spec.name in INLINE_MAPPINGS:
            kind = "str | dict[str, Any]"
        elif spec.kind in (int, float, bool, str):
            kind = spec.kind.__name__
        else:
            kind = "Any"
        lines.append(f"{spec.name}: {kind}")
    return lines


# --- a results file's config given as a mapping ----------------------------------------

#: Keys a results file's ``config`` records that are not options (``RunPlan.resolved_config``):
#: a mapping holding one is a results config (``res.config``), not a run config.
RESULTS_ONLY_KEYS = (
    "package_version",
    "latency_model_requested",
    "calibrated_coefficients",
    "filtered_sampling",
    "penalized_sampling",
)

#: How messages name a results config given as a mapping (no file behind it).
RESULTS_LABEL = "the results config"


def is_results_config(options: Mapping[str, Any]) -> bool:
    """Whether ``options`` is a results file's ``config`` (it records what only a run
    records, such as ``package_version``), e.g. ``res.config`` of a previous run."""
    return any(key in options for key in RESULTS_ONLY_KEYS)


def read_results_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options ``config`` (a results file's ``config``) repeats, exactly as
    ``--config results.json`` reads them (:func:`~inference_sim.config.resolve.load_run_config`:
    without the output paths and ``package_version``, and without the figures the run
    derived for its own deployment, so another GPU or TP derives its own)."""
    from inference_sim.config.resolve import results_config_options

    return results_config_options(_plain_mapping(config), RESULTS_LABEL)


def merge_results_config(config: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` options on top of results config ``config``, exactly as
    ``simulate(config="results.json", **given)`` merges them
    (:func:`~inference_sim.config.resolve.merge_config_file`: a changed ``model`` drops
    the old model's catalog defaults, a kept ``total_kv_blocks`` is warned about)."""
    from inference_sim.config.resolve import merge_file_options

    if given.get("config"):
        raise ConfigError(
            f"give either {RESULTS_LABEL} (a results file's config, as res.config) or "
            "config=, not both"
        )
    return merge_file_options(given, read_results_config(config), True, RESULTS_LABEL)


def _plain_mapping(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with numpy scalars as Python numbers, as a results file read back
    holds them (ConfigError naming :data:`RESULTS_LABEL` for anything else not JSON)."""
    try:
        return json.loads(json.dumps(dict(config), default=_plain))  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{RESULTS_LABEL}: {exc}") from None


def _plain(value: Any) -> Any:
    """JSON for what a results config may hold besides JSON types: numpy scalars."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON")


def config_schema() -> dict[str, Any]:
    """JSON Schema of a run-config file: canonical names plus their aliases."""
    schema = SimConfig.model_json_schema()
    props: dict[str, Any] = schema["properties"]
    for alias, name in ALIASES.items():
        entry = dict(props[name])
        entry["description"] = f"Alias of `{name}`. " + str(entry.get("description", ""))
        entry.pop("x-aliases", None)
        props[alias] = entry
    from inference_sim.config.lora import lora_block_schema

    props["lora"] = lora_block_schema()  # the lora: block (docs/lora.md)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "inference-sim run configuration"
    schema["additionalProperties"] = False
    return schema


def check_option_value(name: str, value: Any, where: str = "") -> None:
    """ConfigError (one line, prefixed by ``where``) unless ``value`` suits option ``name``."""
    try:
        SimConfig.model_validate({name: value})
    except ValidationError as exc:
        prefix = f"{where}: " if where else ""
        raise ConfigError(prefix + one_line(exc)) from None
