"""Resolving the multi-LoRA options (docs/lora.md) into the engine's LoraSettings.

LoRA is on when ``--max-loras`` > 0, when adapters are listed (``--lora-adapters`` or a
``lora:`` block in the run config) or when the workload spec's clients name one; then
``max_loras`` defaults to 1 and ``max_cpu_loras`` to ``max_loras``, as vLLM's
``LoRAConfig``. Sizes come from the base model's architecture (``catalog.lora``), the
per-step read term from the GPU's memory bandwidth (the catalog's peak x efficiency).
"""

from __future__ import annotations

import math
from typing import Any

from inference_sim.catalog.architecture import ModelArchitecture
from inference_sim.catalog.lora import (
    adapter_bytes_per_rank,
    adapter_file_bytes_per_rank,
    lora_token_bytes,
)
from inference_sim.catalog.schema import GpuSpec
from inference_sim.config.checks import require_finite
from inference_sim.config.errors import ConfigError
from inference_sim.instance.lora_config import (
    LISTED,
    MAX_LORA_RANKS,
    LoraSettings,
    check_adapter_name,
)

#: The options of this feature (left out of a LoRA-free run's recorded config).
LORA_OPTIONS = (
    "max_loras",
    "max_cpu_loras",
    "max_lora_rank",
    "lora_adapters",
    "lora_cpu_gpu_bandwidth",
    "lora_cpu_gpu_latency",
    "lora_disk_bandwidth",
    "lora_disk_latency",
    "lora_step_overhead",
)
_BLOCK_KEYS = ("max_loras", "max_cpu_loras", "max_lora_rank", "adapters")
_ADAPTER_KEYS = ("id", "name", "rank", "base_model")
_EXAMPLE = "meta-llama/llama-3.1-8b-instruct"


def lora_block_schema() -> dict[str, Any]:
    """JSON Schema of the run config's ``lora:`` block (``blis config schema``)."""
    return {
        "type": "object",
        "description": "Multi-LoRA serving (docs/lora.md): limits and the known adapters.",
        "additionalProperties": False,
        "properties": {
            "max_loras": {"type": "integer", "minimum": 0},
            "max_cpu_loras": {"type": "integer", "minimum": 0},
            "max_lora_rank": {"type": "integer", "enum": list(MAX_LORA_RANKS)},
            "adapters": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "rank": {"type": "integer", "minimum": 1},
                        "base_model": {"type": "string"},
                    },
                },
            },
        },
    }


def expand_lora_block(value: Any, where: str) -> dict[str, Any]:
    """A run config's ``lora:`` block as options (``lora_adapters`` as NAME:RANK:BASE).

    Each adapter entry is checked here, so an error names the file's field
    (``--config F: lora.adapters[0].rank``); the checks against other options (rank
    above ``--max-lora-rank``, another base model) are :func:`parse_adapters`'."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: lora must be a mapping with keys {', '.join(_BLOCK_KEYS)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _BLOCK_KEYS:
            raise ConfigError(
                f"{where}: lora.{key} is not a known key; valid: {', '.join(_BLOCK_KEYS)}"
            )
        if key != "adapters":
            out[key] = item
    adapters = value.get("adapters") or []
    if not isinstance(adapters, list):
        raise ConfigError(f"{where}: lora.adapters must be a list of {{id, rank, base_model}}")
    texts = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(adapters):
        w = f"{where}: lora.adapters[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{w} must be a mapping with id, rank, base_model")
        unknown = [k for k in entry if k not in _ADAPTER_KEYS]
        if unknown:
            raise ConfigError(
                f"{w}.{unknown[0]} is not a known key; valid: id (or its alias name), rank, "
                "base_model"
            )
        if "id" in entry and "name" in entry:
            raise ConfigError(f"{w}: give id or name (an alias of id), not both")
        key = "id" if "id" in entry else "name"
        name = entry.get(key)
        if not isinstance(name, str) or not name.strip() or ":" in name:
            raise ConfigError(f"{w}.{key} must be a non-empty name without ':', got {name!r}")
        name = name.strip()
        check_adapter_name(name, f"{w}.{key}")
        if name in seen:
            raise ConfigError(
                f"{w}.{key}: adapter {name!r} is listed twice (also at [{seen[name]}])"
            )
        seen[name] = i
        rank = entry.get("rank")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ConfigError(f"{w}.rank must be a whole number >= 1, got {rank!r}")
        base = entry.get("base_model")
        if base is not None and (not isinstance(base, str) or ":" in base):
            raise ConfigError(
                f"{w}.base_model must be a model id such as {_EXAMPLE!r}, got {base!r}"
            )
        texts.append(f"{name}:{'' if rank is None else rank}:{base or ''}")
    out["lora_adapters"] = texts
    return out


def check_max_lora_rank(rank: int, flag: str = "--max-lora-rank") -> None:
    """ConfigError unless ``rank`` is one of vLLM's ``MaxLoRARanks``."""
    if rank not in MAX_LORA_RANKS:
        raise ConfigError(
            f"{flag} must be one of {', '.join(map(str, MAX_LORA_RANKS))} (vLLM's allowed "
            f"values), got {rank}"
        )


def parse_adapters(items: list[str], model: str, max_rank: int) -> tuple[tuple[str, int], ...]:
    """``NAME[:RANK[:BASE_MODEL]]`` entries -> ((name, rank), ...), checked (exit 2).

    A ``lora:`` block's entries were checked one by one by :func:`expand_lora_block`;
    the checks here against other options name both sources (:data:`LISTED`)."""
    seen: dict[str, int] = {}
    for item in items:
        name, _, rest = item.partition(":")
        rank_text, _, base = rest.partition(":")
        name = name.strip()
        if not name:
            raise ConfigError(f"--lora-adapters: empty adapter name in {item!r}")
        check_adapter_name(name, "--lora-adapters")
        if name in seen:
            raise ConfigError(f"--lora-adapters: adapter {name!r} listed twice")
        rank_text = rank_text.strip()
        if rank_text:
            try:
                rank = int(rank_text)
            except ValueError:
                rank = 0
            if rank < 1:
                raise ConfigError(
                    f"--lora-adapters: rank of {name!r} must be a whole number >= 1, "
                    f"got {rank_text!r}"
                )
        else:
            rank = max_rank
        if rank > max_rank:
            raise ConfigError(
                f"{LISTED}: adapter {name!r} has rank {rank}, above --max-lora-rank "
                f"{max_rank}; raise --max-lora-rank to at least {rank}"
            )
        base = base.strip().lower()
        if base and base != model:
            raise ConfigError(
                f"{LISTED}: adapter {name!r} is for base model {base!r}, not the run's "
                f"--model {model!r}; serve it on its own base model"
            )
        seen[name] = rank
    return tuple(seen.items())


def lora_wanted(o: dict[str, Any], workload_spec: Any) -> bool:
    """True when anything asks for LoRA (see the module docstring)."""
    if o["max_loras"] > 0 or o["lora_adapters"]:
        return True
    clients = getattr(workload_spec, "clients", None) or ()
    return any(getattr(c, "adapter", "") for c in clients)


def check_client_ranks(clients: Any, listed: dict[str, int], max_rank: int) -> None:
    """One rank per adapter across the workload spec's clients, before the run (exit 2).

    A client's ``adapter_rank`` must agree with the adapter's listed rank and with every
    other client's; a client without one takes the adapter's rank, so an unlisted
    adapter named by clients with and without a rank is refused too (which rank it ran
    at would depend on which request came first)."""
    ranked: dict[str, tuple[int, str]] = {}  # adapter -> (rank, first client giving it)
    unranked: dict[str, str] = {}  # adapter -> first client naming it without a rank
    for c in clients or ():
        name = getattr(c, "adapter", "")
        if not name:
            continue
        who = f"workload spec client {c.id or name!r}"
        check_adapter_name(name, who)
        rank = getattr(c, "adapter_rank", 0)
        if rank > max_rank:
            raise ConfigError(f"{who}: adapter_rank {rank} is above --max-lora-rank {max_rank}")
        if not rank:
            unranked.setdefault(name, who)
            continue
        if name in listed and rank != listed[name]:
            raise ConfigError(
                f"{who}: adapter_rank {rank} of adapter {name!r} differs from its rank "
                f"{listed[name]} in {LISTED}; drop adapter_rank or make them agree"
            )
        first = ranked.setdefault(name, (rank, who))
        if first[0] != rank:
            raise ConfigError(
                f"{who}: adapter_rank {rank} of adapter {name!r} differs from the "
                f"adapter_rank {first[0]} of {first[1]}; an adapter has one rank, make them agree"
            )
    for name, who in unranked.items():
        if name in ranked and name not in listed:
            rank, other = ranked[name]
            raise ConfigError(
                f"{who} names adapter {name!r} without adapter_rank while {other} gives "
                f"adapter_rank {rank}; give both the same adapter_rank (or list it in "
                "--lora-adapters)"
            )


def normalize_lora(o: dict[str, Any], workload_spec: Any) -> bool:
    """Check the LoRA options and fill vLLM's defaults in ``o``; True when LoRA is on."""
    for name in ("max_loras", "max_cpu_loras"):
        if o[name] < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {o[name]}")
    check_max_lora_rank(o["max_lora_rank"])
    for name in ("lora_cpu_gpu_bandwidth", "lora_disk_bandwidth"):
        require_finite(f"--{name.replace('_', '-')}", o[name], unit=" GB/s")
    for name in ("lora_cpu_gpu_latency", "lora_disk_latency", "lora_step_overhead"):
        v = o[name]
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 µs, got {v}")
    if not lora_wanted(o, workload_spec):
        return False
    if o["max_loras"] == 0:
        o["max_loras"] = 1
    if o["max_cpu_loras"] == 0:
        o["max_cpu_loras"] = o["max_loras"]
    if o["max_cpu_loras"] < o["max_loras"]:
        raise ConfigError(
            f"--max-cpu-loras must be >= --max-loras ({o['max_loras']}), got {o['max_cpu_loras']}"
        )
    adapters = parse_adapters(o["lora_adapters"], o["model"], o["max_lora_rank"])
    check_client_ranks(getattr(workload_spec, "clients", None), dict(adapters), o["max_lora_rank"])
    o["lora_adapters"] = [f"{n}:{r}" for n, r in adapters]
    return True


def lora_gpu_bytes(o: dict[str, Any], arch: ModelArchitecture | None) -> float:
    """GPU memory vLLM sets aside for adapter slots: max_loras x max_lora_rank (per GPU)."""
    if arch is None or o["max_loras"] <= 0:
        return 0.0
    return o["max_loras"] * o["max_lora_rank"] * adapter_bytes_per_rank(arch, o["tp"] or 1)


def lora_settings(
    o: dict[str, Any], arch: ModelArchitecture | None, gpu: GpuSpec | None
) -> LoraSettings:
    """The engine's LoRA settings from resolved options (after :func:`normalize_lora`)."""
    per_rank = adapter_bytes_per_rank(arch, o["tp"] or 1) if arch is not None else 0.0
    hbm = 0.0
    if gpu is not None and arch is not None:
        hbm = gpu.peak_bandwidth_tbs * gpu.bandwidth_efficiency * 1e6  # TB/s -> bytes/µs
    adapters = tuple(
        (name, int(rank)) for name, _, rank in (a.partition(":") for a in o["lora_adapters"])
    )
    try:
        return LoraSettings(
            max_loras=o["max_loras"],
            max_cpu_loras=o["max_cpu_loras"],
            max_lora_rank=o["max_lora_rank"],
            adapters=adapters,
            bytes_per_rank=per_rank,
            file_bytes_per_rank=adapter_file_bytes_per_rank(arch) if arch is not None else 0.0,
            cpu_gpu_bandwidth=o["lora_cpu_gpu_bandwidth"] * 1000.0,
            cpu_gpu_base_latency=o["lora_cpu_gpu_latency"],
            disk_bandwidth=o["lora_disk_bandwidth"] * 1000.0,
            disk_base_latency=o["lora_disk_latency"],
            hbm_bandwidth=hbm,
            step_overhead_per_adapter=o["lora_step_overhead"],
            token_bytes=lora_token_bytes(arch, o["tp"] or 1) if arch is not None else 0.0,
        )
    except ValueError as exc:
        raise ConfigError(f"LoRA settings: {exc}") from None
