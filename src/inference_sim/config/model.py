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

from collections.abc import Mapping
from typing import Annotated, Any, Literal

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

    @_model_validator(mode="before")
    @classmethod
    def _canonical_keys(cls, data: Any) -> Any:
        """Either spelling (``max_num_seqs``, ``max-num-seqs``) -> the canonical name."""
        if not isinstance(data, Mapping):
            return data
        from inference_sim.core.suggest import unknown_keys

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
    def from_options(cls, options: Mapping[str, Any]) -> Any:
        """Validate ``options``; bad input raises :class:`ConfigError` with one line."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            raise ConfigError(one_line(exc)) from None

    @classmethod
    def from_file(cls, path: str) -> Any:
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


SimConfig = _build()
"""The pydantic model of every ``blis run`` option (built from the options table)."""


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
