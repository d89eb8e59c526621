"""``--hardware-config FILE``: GPUs in the reference's ``hardware_config.json`` schema.

The file is a JSON object keyed by GPU name; each entry has ``TFlopsPeak``,
``BwPeakTBs``, ``BwEffConstant``, ``TOverheadMicros``, ``perLayerOverhead``,
``mfuPrefill``, ``mfuDecode`` and ``allReduceLatency`` (keys matched case-insensitively,
as Go's JSON decoder does). Two optional keys of our own give the memory size for the
KV-capacity estimate: ``memoryGB`` (published size) and ``memoryGiB`` (what the runtime
reports). A ``comment`` key, or any key starting with ``_``, is a note (JSON has no
comments) and is skipped. Any other key is ignored, as the reference's Go decoder
ignores it, but with a warning and a did-you-mean hint (``TOverheadMicrosX: 500`` used
to be dropped without a word and the step overhead read as 0); not refused, because
other versions of the reference's schema carry keys of their own.

The GPUs read here are merged over the catalog's (:func:`with_hardware_config`); a GPU
already in the catalog keeps its memory size when the file gives none, and its usable
memory (``memoryGiB``) when the file gives the same published ``memoryGB``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from inference_sim.core.inputs import read_text
from inference_sim.core.suggest import did_you_mean

from .catalog import Catalog
from .errors import CatalogError
from .schema import GpuSpec

__all__ = ["read_hardware_config", "with_hardware_config"]

# reference key (lower-cased) -> GpuSpec field, and whether it must be > 0
_KEYS: dict[str, tuple[str, bool]] = {
    "tflopspeak": ("peak_tflops", True),
    "bwpeaktbs": ("peak_bandwidth_tbs", True),
    "bweffconstant": ("bandwidth_efficiency", True),
    "toverheadmicros": ("step_overhead_us", False),
    "perlayeroverhead": ("per_layer_overhead_us", False),
    "mfuprefill": ("mfu_prefill", True),
    "mfudecode": ("mfu_decode", True),
    "allreducelatency": ("allreduce_latency_us", False),
    "memorygb": ("memory_gb", False),
    "memorygib": ("memory_gib", False),
}
# Largest physically meaningful value of each figure (issue 21): efficiencies are
# fractions of the peak; the others are 10-100x beyond any GPU made (B200: ~2,250 dense
# BF16 TFLOPS, 8 TB/s, 192 GB), so only a unit mistake exceeds them.
_MAX: dict[str, float] = {
    "tflopspeak": 100_000.0,
    "bwpeaktbs": 1_000.0,
    "bweffconstant": 1.0,
    "toverheadmicros": 3_600_000_000.0,
    "perlayeroverhead": 3_600_000_000.0,
    "mfuprefill": 1.0,
    "mfudecode": 1.0,
    "allreducelatency": 3_600_000_000.0,
    "memorygb": 100_000.0,
    "memorygib": 100_000.0,
}
_SPELLING = {
    "tflopspeak": "TFlopsPeak",
    "bwpeaktbs": "BwPeakTBs",
    "bweffconstant": "BwEffConstant",
    "toverheadmicros": "TOverheadMicros",
    "perlayeroverhead": "perLayerOverhead",
    "mfuprefill": "mfuPrefill",
    "mfudecode": "mfuDecode",
    "allreducelatency": "allReduceLatency",
    "memorygb": "memoryGB",
    "memorygib": "memoryGiB",
}


def _is_note(key: str) -> bool:
    """A key that annotates an entry (``comment``, ``_source``): JSON has no comments."""
    return key.lower() == "comment" or key.startswith("_")


def _gpu(name: str, raw: Any, label: str) -> GpuSpec:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{label}: {name}: expected an object of GPU figures")
    values: dict[str, float] = {}
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        found = _KEYS.get(str(key).lower())
        if found is None and _is_note(str(key)):
            continue
        if found is None:
            # Warned, not refused: other versions of the reference's schema add keys a
            # run must still accept; a typo of a figure is named with its likely spelling.
            spellings = list(_SPELLING.values())
            logging.getLogger("inference_sim").warning(
                '%s: %s: unknown key "%s"%s ignored; known: %s (case-insensitive), and '
                "notes: comment or a key starting with _",
                label,
                name,
                key,
                did_you_mean(key, spellings),
                ", ".join(spellings),
            )
            continue
        field, _ = found
        if field in spelled:
            raise CatalogError(
                f"{label}: {name}: {spelled[field]} and {key} name the same figure"
                " (keys are case-insensitive); give it once"
            )
        spelled[field] = str(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CatalogError(f"{label}: {name}.{key}: expected a number, got {value!r}")
        if not math.isfinite(float(value)) or value < 0:
            raise CatalogError(f"{label}: {name}.{key}: must be a finite number >= 0, got {value}")
        top = _MAX[str(key).lower()]
        if value > top:
            raise CatalogError(
                f"{label}: {name}.{key}: must be <= {top:,g} (physically possible), got {value}"
            )
        values[field] = float(value)
    for lower, (field, positive) in _KEYS.items():
        if positive and values.get(field, 0.0) <= 0:
            raise CatalogError(
                f"{label}: {name}.{_SPELLING[lower]}: required and must be > 0"
                + ("" if field in values else " (missing)")
            )
    return GpuSpec(
        name=name,
        peak_tflops=values["peak_tflops"],
        peak_bandwidth_tbs=values["peak_bandwidth_tbs"],
        bandwidth_efficiency=values["bandwidth_efficiency"],
        step_overhead_us=values.get("step_overhead_us", 0.0),
        per_layer_overhead_us=values.get("per_layer_overhead_us", 0.0),
        mfu_prefill=values["mfu_prefill"],
        mfu_decode=values["mfu_decode"],
        allreduce_latency_us=values.get("allreduce_latency_us", 0.0),
        memory_gb=values.get("memory_gb", 0.0),
        memory_gib=values.get("memory_gib", 0.0),
        source=f"--hardware-config {label}",
    )


def read_hardware_config(path: str | os.PathLike[str]) -> dict[str, GpuSpec]:
    """Parse a hardware config file; one-line :class:`CatalogError` naming file and field."""
    label = os.fspath(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise CatalogError(f"{label}: hardware config not found") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise CatalogError(f"{label}: cannot read ({exc.strerror or exc})") from None
    twice: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        twice.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(items)

    try:
        doc = json.loads(text, object_pairs_hook=pairs)
    except RecursionError:
        raise CatalogError(f"{label}: invalid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{label}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if twice:
        raise CatalogError(f"{label}: key {twice[0]!r} given twice; give it once")
    if not isinstance(doc, Mapping) or not doc:
        raise CatalogError(f"{label}: expected a JSON object keyed by GPU name")
    return {str(name): _gpu(str(name), raw, label) for name, raw in doc.items()}


def with_hardware_config(catalog: Catalog, path: str | os.PathLike[str]) -> Catalog:
    """``catalog`` with the GPUs of ``path`` added or replacing those of the same name.

    A name that is an alias in the catalog (``A100-80``) replaces the GPU it stands for.
    A replaced GPU keeps the catalog's memory size when the file gives none, and the
    catalog's usable memory when the file gives its published size alone (the usable
    share of a published size differs by card: ECC GDDR exposes less than HBM).
    """
    gpus = read_hardware_config(path)
    merged: dict[str, GpuSpec] = {}
    for name, spec in gpus.items():
        target = name
        try:
            old: GpuSpec | None = catalog.gpu(name)
        except CatalogError:
            old = None
        if old is not None:
            target = old.name
            if spec.memory_gb <= 0 and spec.memory_gib <= 0:
                spec = replace(spec, memory_gb=old.memory_gb, memory_gib=old.memory_gib)
            elif spec.memory_gib <= 0 and spec.memory_gb == old.memory_gb:
                # The GPU's published size (L40S: 48 GB) is not what the runtime sees
                # (ECC GDDR cards expose less: 44.5 GiB, not the 47.5 GiB 99 % of 48
                # would give): keep the catalog's measured figure (docs/catalog.md).
                spec = replace(spec, memory_gib=old.memory_gib)
            spec = replace(spec, name=target)
        merged[target] = spec
    return catalog.with_overrides(Catalog(gpus=merged))
