"""Building a :class:`Catalog` from the bundled data and optional user files.

Two formats are read here:

* the bundled ``data/catalog.json``, this package's own format
  (``"format": "inference-sim-catalog/1"``), shipped as package data so the
  simulator works offline and without any external checkout;
* a user-supplied ``--defaults-filepath`` YAML file in the layout used by the
  original simulator's ``defaults.yaml`` (top-level ``defaults``,
  ``workloads``, ``models``, ``version``), so existing files keep working.

User files are validated strictly: an unknown key or a mistyped value is far
more likely to be a mistake than an intentional extension, and a silently
ignored coefficient would make simulation results wrong without any hint.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from inference_sim.core.inputs import BoundedLoader, load_yaml, read_text

from ._fields import Source
from .catalog import Catalog
from .schema import CoefficientSet, GpuSpec, ModelDefaults, WorkloadPreset

__all__ = ["BUNDLED_FORMAT", "REFERENCE_DEFAULTS_FILE", "load_catalog", "unread_defaults_note"]

#: Value of the ``format`` field the bundled JSON must carry.
BUNDLED_FORMAT = "inference-sim-catalog/1"

_PRESET_FIELDS: tuple[str, ...] = (
    "prefix_tokens",
    "prompt_tokens",
    "prompt_tokens_stdev",
    "prompt_tokens_min",
    "prompt_tokens_max",
    "output_tokens",
    "output_tokens_stdev",
    "output_tokens_min",
    "output_tokens_max",
)
# Only the shared-prefix length may be omitted (it then means "no prefix");
# every other field shapes the length distribution and has no safe default.
_OPTIONAL_PRESET_FIELDS = frozenset({"prefix_tokens"})

_GPU_FIELDS: tuple[str, ...] = (
    "peak_tflops",
    "peak_bandwidth_tbs",
    "bandwidth_efficiency",
    "step_overhead_us",
    "per_layer_overhead_us",
    "mfu_prefill",
    "mfu_decode",
    "allreduce_latency_us",
)

# Optional per-GPU keys of the bundled file: memory sizes and a source note.
_GPU_OPTIONAL = frozenset({"memory_gb", "memory_gib", "source"})


def load_catalog(defaults_filepath: str | os.PathLike[str] | None = None) -> Catalog:
    """The bundled catalog, optionally overlaid with a user defaults file.

    Without a path the cached bundled catalog is returned (it is immutable, so
    sharing it is safe).  With a path, the YAML file is parsed strictly and its
    entries take precedence over the bundled ones (see
    :meth:`Catalog.with_overrides`).  The user file is re-read on every call so
    edits are picked up by long-running callers such as tests.

    Raises :class:`CatalogError` if the file is missing or invalid.
    """
    bundled = _bundled_catalog()
    if defaults_filepath is None:
        return bundled
    return bundled.with_overrides(read_defaults_file(defaults_filepath))


#: The file the reference reads from the working directory when ``--defaults-filepath``
#: is not given (cli.md 2.1); this package reads a user file only when it is named.
REFERENCE_DEFAULTS_FILE = "defaults.yaml"


def unread_defaults_note(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The warning for a ``defaults.yaml`` in the working directory that a run without
    ``--defaults-filepath`` does not read, or None when there is none.

    The reference reads ``./defaults.yaml`` by default, so a user who trained their own
    coefficients into it would otherwise get the bundled catalog's numbers without a
    hint. The file is not read implicitly here (a run's inputs are the ones its command
    line or ``--config`` names, so the same command gives the same numbers in any
    folder); the caller warns once instead.
    """
    try:
        path = os.path.join(
            os.fspath(cwd) if cwd is not None else os.getcwd(), REFERENCE_DEFAULTS_FILE
        )
        present = os.path.isfile(path)
    except OSError:  # a working directory that no longer exists
        return None
    if not present:
        return None
    return (
        f"./{REFERENCE_DEFAULTS_FILE} is not read (the reference reads it by default): the "
        "bundled catalog is used; give --defaults-filepath "
        f"{REFERENCE_DEFAULTS_FILE} to merge its models, coefficients and presets over it"
    )


# --------------------------------------------------------------------------
# bundled JSON


@functools.lru_cache(maxsize=1)
def _bundled_catalog() -> Catalog:
    """Parse the packaged JSON once per process; it never changes at run time."""
    src = Source("bundled catalog (inference_sim/catalog/data/catalog.json)")
    resource = resources.files(__package__).joinpath("data").joinpath("catalog.json")
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:
        raise src.error("", f"cannot be read ({exc}); the installation is incomplete") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise src.error("", f"invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    return parse_bundled(doc, src)


def parse_bundled(doc: Any, src: Source) -> Catalog:
    """Turn a decoded bundled-format document into a :class:`Catalog`.

    The bundled data is validated too: it costs well under a millisecond and
    turns a bad regeneration of the JSON into a clear error instead of a
    confusing failure deep inside a simulation.
    """
    top = src.mapping(
        doc,
        "",
        allowed={"format", "source_version", "models", "gpus", "presets"},
        required={"format", "models", "gpus", "presets"},
    )
    if top["format"] != BUNDLED_FORMAT:
        raise src.error("format", f'expected "{BUNDLED_FORMAT}", got {top["format"]!r}')

    coefficients: list[CoefficientSet] = []
    defaults: dict[str, ModelDefaults] = {}
    for model_id, entry in src.mapping(top["models"], "models").items():
        field = f"models.{model_id}"
        if model_id != model_id.lower():
            raise src.error(field, "model ids must be lower-case")
        entry = src.mapping(
            entry,
            field,
            allowed={"hf_repo", "default", "coefficients"},
            required={"hf_repo", "default", "coefficients"},
        )
        hf_repo = src.optional_string(entry["hf_repo"], f"{field}.hf_repo")
        if entry["default"] is not None:
            d = src.mapping(
                entry["default"],
                f"{field}.default",
                allowed={"gpu", "tp", "vllm_version"},
                required={"gpu", "tp", "vllm_version"},
            )
            defaults[model_id] = ModelDefaults(
                gpu=src.string(d["gpu"], f"{field}.default.gpu"),
                tp=src.integer(d["tp"], f"{field}.default.tp", minimum=1),
                vllm_version=src.string(d["vllm_version"], f"{field}.default.vllm_version"),
                hf_repo=hf_repo,
            )
        for i, raw in enumerate(src.sequence(entry["coefficients"], f"{field}.coefficients")):
            cfield = f"{field}.coefficients[{i}]"
            keys = {"gpu", "tp", "vllm_version", "alpha", "beta", "kv_blocks"}
            c = src.mapping(raw, cfield, allowed=keys, required=keys)
            coefficients.append(
                CoefficientSet(
                    model=model_id,
                    gpu=src.string(c["gpu"], f"{cfield}.gpu"),
                    tp=src.integer(c["tp"], f"{cfield}.tp", minimum=1),
                    vllm_version=src.string(c["vllm_version"], f"{cfield}.vllm_version"),
                    alpha=src.triple(c["alpha"], f"{cfield}.alpha"),
                    beta=src.triple(c["beta"], f"{cfield}.beta"),
                    total_kv_blocks=src.integer(c["kv_blocks"], f"{cfield}.kv_blocks", minimum=1),
                )
            )

    gpus: dict[str, GpuSpec] = {}
    aliases: dict[str, list[str]] = {}
    for name, raw in src.mapping(top["gpus"], "gpus").items():
        field = f"gpus.{name}"
        keys = {*_GPU_FIELDS, "aliases"}
        g = src.mapping(raw, field, allowed=keys | _GPU_OPTIONAL, required=keys)
        values = {k: src.number(g[k], f"{field}.{k}") for k in _GPU_FIELDS}
        memory = {
            k: src.number(g[k], f"{field}.{k}") for k in ("memory_gb", "memory_gib") if k in g
        }
        source = src.optional_string(g.get("source"), f"{field}.source")
        gpus[name] = GpuSpec(name=name, **values, **memory, source=source)
        aliases[name] = [
            src.string(a, f"{field}.aliases[{i}]")
            for i, a in enumerate(src.sequence(g["aliases"], f"{field}.aliases"))
        ]

    presets = {
        name: _preset(src, raw, f"presets.{name}", all_required=True)
        for name, raw in src.mapping(top["presets"], "presets").items()
    }
    return Catalog(
        coefficients=coefficients,
        defaults=defaults,
        presets=presets,
        gpus=gpus,
        gpu_aliases=aliases,
    )


def _preset(src: Source, raw: Any, field: str, *, all_required: bool) -> WorkloadPreset:
    """Validate one workload preset, shared by both formats."""
    required = (
        _PRESET_FIELDS
        if all_required
        else [f for f in _PRESET_FIELDS if f not in _OPTIONAL_PRESET_FIELDS]
    )
    p = src.mapping(raw, field, allowed=_PRESET_FIELDS, required=required)
    values = {k: src.integer(p.get(k, 0), f"{field}.{k}") for k in _PRESET_FIELDS}
    for kind in ("prompt_tokens", "output_tokens"):
        lo, hi = values[f"{kind}_min"], values[f"{kind}_max"]
        if lo > hi:
            raise src.error(f"{field}.{kind}_min", f"must be <= {kind}_max ({hi}), got {lo}")
    return WorkloadPreset(**values)


# --------------------------------------------------------------------------
# user YAML (reference defaults.yaml layout)


class _StrictYamlLoader(BoundedLoader):
    """Safe YAML loader that rejects duplicate keys and reads ``1e-5`` as a float.

    PyYAML follows YAML 1.1, where a repeated key silently keeps the last
    value and exponent notation without a decimal point (``1e-5``) is a
    string; both would turn a plausible-looking coefficient file into wrong
    numbers or a baffling type error.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# The float resolver (``1e-5`` is a number) comes from BoundedLoader.

_USER_TOP_KEYS = frozenset({"defaults", "workloads", "models", "version"})
_USER_DEFAULT_KEYS = frozenset({"GPU", "tensor_parallelism", "vllm_version", "hf_repo"})
_USER_MODEL_KEYS = frozenset(
    {
        "id",
        "GPU",
        "tensor_parallelism",
        "vllm_version",
        "alpha_coeffs",
        "beta_coeffs",
        "total_kv_blocks",
        "best_loss",
    }
)


def read_defaults_file(path: str | os.PathLike[str]) -> Catalog:
    """Parse a user defaults file (reference ``defaults.yaml`` layout) on its own.

    The result holds only what the file defines; :func:`load_catalog` merges
    it over the bundled data.  Every top-level section is optional so that a
    file can add a single model.  ``best_loss`` is accepted for compatibility
    but discarded, since the simulator has no use for training loss.
    """
    label = os.fspath(path)
    src = Source(label)
    try:
        text = read_text(path)
    except FileNotFoundError as exc:
        raise src.error("", "defaults file not found") from exc
    except IsADirectoryError as exc:
        raise src.error("", "expected a YAML file, got a directory") from exc
    except UnicodeDecodeError as exc:
        raise src.error("", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise src.error("", f"cannot read defaults file ({exc.strerror or exc})") from exc
    try:
        # yaml.load is safe here: the loader is a SafeLoader subclass.
        doc = load_yaml(text, _StrictYamlLoader)
    except yaml.YAMLError as exc:
        raise src.error("", f"malformed YAML: {_yaml_problem(exc)}") from exc
    if doc is None:
        raise src.error("", f"file is empty; expected keys: {', '.join(sorted(_USER_TOP_KEYS))}")
    return parse_defaults_document(doc, src)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Squeeze a PyYAML error (normally several lines) into one line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is not None:
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return problem
    return " ".join(str(exc).split())


def parse_defaults_document(doc: Any, src: Source) -> Catalog:
    """Validate a decoded reference-layout document and build a catalog from it."""
    top = src.mapping(doc, "", allowed=_USER_TOP_KEYS)

    if "version" in top:
        version = top["version"]
        if isinstance(version, bool) or not isinstance(version, str | int | float):
            raise src.error("version", f"expected a version string, got {src.describe(version)}")

    defaults: dict[str, ModelDefaults] = {}
    for model_id, raw in _section(src, top, "defaults").items():
        field = f"defaults.{model_id}"
        d = src.mapping(
            raw,
            field,
            allowed=_USER_DEFAULT_KEYS,
            required=_USER_DEFAULT_KEYS - {"hf_repo"},
        )
        key = model_id.lower()
        if key in defaults:
            raise src.error(field, f'duplicates "{key}" (model ids are case-insensitive)')
        defaults[key] = ModelDefaults(
            gpu=src.string(d["GPU"], f"{field}.GPU"),
            tp=src.integer(d["tensor_parallelism"], f"{field}.tensor_parallelism", minimum=1),
            vllm_version=src.string(d["vllm_version"], f"{field}.vllm_version"),
            hf_repo=src.optional_string(d.get("hf_repo"), f"{field}.hf_repo"),
        )

    presets = {
        name: _preset(src, raw, f"workloads.{name}", all_required=False)
        for name, raw in _section(src, top, "workloads").items()
    }
    lowered = [name.lower() for name in presets]
    if len(set(lowered)) != len(lowered):
        raise src.error("workloads", "preset names must be unique ignoring case")

    coefficients: list[CoefficientSet] = []
    models = top.get("models")
    for i, raw in enumerate([] if models is None else src.sequence(models, "models")):
        field = f"models[{i}]"
        m = src.mapping(
            raw, field, allowed=_USER_MODEL_KEYS, required=_USER_MODEL_KEYS - {"best_loss"}
        )
        model_id = src.string(m["id"], f"{field}.id")
        field = f'models[{i}] (id "{model_id}")'
        if m.get("best_loss") is not None:
            src.number(m["best_loss"], f"{field}.best_loss")
        coefficients.append(
            CoefficientSet(
                model=model_id.lower(),
                gpu=src.string(m["GPU"], f"{field}.GPU"),
                tp=src.integer(m["tensor_parallelism"], f"{field}.tensor_parallelism", minimum=1),
                vllm_version=src.string(m["vllm_version"], f"{field}.vllm_version"),
                alpha=src.triple(m["alpha_coeffs"], f"{field}.alpha_coeffs"),
                beta=src.triple(m["beta_coeffs"], f"{field}.beta_coeffs"),
                total_kv_blocks=src.integer(
                    m["total_kv_blocks"], f"{field}.total_kv_blocks", minimum=1
                ),
            )
        )

    _warn_conflicting_entries(coefficients, src)
    return Catalog(coefficients=coefficients, defaults=defaults, presets=presets)


def _warn_conflicting_entries(coefficients: list[CoefficientSet], src: Source) -> None:
    """One warning for deployments listed twice with other coefficients: the first entry
    is used, as the reference's lookup does (its own defaults.yaml has five such)."""
    first: dict[tuple[str, str, int, str], CoefficientSet] = {}
    clashes: list[str] = []
    for c in coefficients:
        key = (c.model, c.gpu, c.tp, c.vllm_version)
        seen = first.setdefault(key, c)
        if seen is not c and (seen.alpha, seen.beta, seen.total_kv_blocks) != (
            c.alpha,
            c.beta,
            c.total_kv_blocks,
        ):
            clashes.append(f"{c.model} on {c.gpu} TP {c.tp} ({c.vllm_version})")
    if clashes:
        shown = "; ".join(clashes[:3]) + (
            f"; and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        )
        logging.getLogger("inference_sim").warning(
            "%s: %d deployment(s) listed twice with other coefficients, the first entry "
            "is used: %s",
            src.label,
            len(clashes),
            shown,
        )


def _section(src: Source, top: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """An optional mapping-valued top-level section; absent or null means empty."""
    value = top.get(name)
    return {} if value is None else src.mapping(value, name)
