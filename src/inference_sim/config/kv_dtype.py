"""``--kv-cache-dtype``: the KV cache's element type, as vLLM names it.

vLLM stores the KV cache in the model's dtype unless ``--kv-cache-dtype`` says otherwise;
the FP8 variants take one byte per element, so the same memory holds twice the blocks and
attention reads half the bytes. The models that price KV traffic and derive capacity from
the architecture (calibrated, roofline) read it through
``ModelArchitecture.kv_dtype_bytes``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inference_sim.catalog.architecture import ModelArchitecture
from inference_sim.config.errors import ConfigError

#: vLLM's ``--kv-cache-dtype`` values and their bytes per element (0: the model's dtype).
KV_CACHE_DTYPES: dict[str, float] = {
    "auto": 0.0,
    "bfloat16": 2.0,
    "float16": 2.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
}


def kv_dtype_bytes(name: object) -> float:
    """Bytes per KV element of a ``--kv-cache-dtype`` value (0: the model's dtype)."""
    key = str(name).strip().lower()
    if key not in KV_CACHE_DTYPES:
        raise ConfigError(
            f"--kv-cache-dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {key!r}"
        )
    return KV_CACHE_DTYPES[key]


def with_kv_dtype(arch: ModelArchitecture | None, name: Any) -> ModelArchitecture | None:
    """``arch`` with the bytes per KV element of ``--kv-cache-dtype`` ``name``."""
    kv_bytes = kv_dtype_bytes(name)
    if arch is None or not kv_bytes or arch.kv_dtype_bytes == kv_bytes:
        return arch
    return replace(arch, kv_dtype_bytes=kv_bytes)
