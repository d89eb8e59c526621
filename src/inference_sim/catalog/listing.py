"""Tabular view of the catalog for ``blis models``.

The rows are plain dicts so the CLI can print them as text, JSON or CSV
without knowing about catalog internals. ``latency_modes`` says which step-time
models a row can run (``blackbox`` needs trained coefficients, ``roofline`` and
``calibrated`` a bundled architecture and a GPU with known specs);
``derived_kv_blocks`` is the KV capacity estimated from GPU memory (docs/roofline.md),
blank where it cannot be computed or the model does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .architecture import ModelArchitecture, bundled_architectures
from .catalog import Catalog
from .errors import CatalogError
from .schema import GpuSpec

__all__ = ["MODELS_TABLE_COLUMNS", "format_models_table", "models_table", "suggested_deployment"]

#: Column order of :func:`models_table` rows and of the printed table.
MODELS_TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "gpu",
    "tp",
    "vllm_version",
    "latency_modes",
    "total_kv_blocks",
    "derived_kv_blocks",
    "default",
)

#: GPU and TP degrees tried for models that only have an architecture.
_ROOFLINE_ONLY_GPU = "H100"
_TP_CHOICES = (1, 2, 4, 8)


def _block_size(arch: ModelArchitecture, gpu: GpuSpec, settings: dict[str, Any]) -> int:
    """The block size the settings give, else vLLM's own (MLA on Hopper: 64), as a run's."""
    from inference_sim.catalog.capacity import vllm_block_size

    size = settings.get("block_size")
    return int(size) if size is not None else vllm_block_size(arch, gpu.name)


def _derived_blocks(
    arch: ModelArchitecture | None, gpu: GpuSpec | None, tp: int, settings: dict[str, Any]
) -> int | None:
    """Blocks derived from memory, or None (no architecture, no memory size, no fit)."""
    if arch is None or gpu is None or gpu.usable_memory_bytes <= 0:
        return None
    from inference_sim.catalog.capacity import derive_kv_blocks

    settings = {**settings, "block_size": _block_size(arch, gpu, settings)}
    cap = derive_kv_blocks(arch, gpu, tp, **settings)
    return cap.blocks if cap.fits else None


def _gpu_or_none(catalog: Catalog, name: str) -> GpuSpec | None:
    try:
        return catalog.gpu(name)
    except CatalogError:
        return None


def models_table(
    catalog: Catalog,
    *,
    block_size: int | None = None,
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int = 2048,
) -> list[dict[str, Any]]:
    """One row per deployment that has trained coefficients, plus roofline-only models.

    Only the set that :meth:`Catalog.find_coefficients` would actually return
    is listed for each (model, GPU, TP, vLLM version): the data contains
    repeated training runs for some deployments, and showing the shadowed
    ones would suggest choices the simulator never makes.  ``default`` is true
    on the row the model's default deployment resolves to (at most one per
    model).  Rows are sorted by model, GPU, TP and then vLLM version.

    A model with a bundled architecture but no coefficients gets one row on H100 at
    the smallest TP (1, 2, 4, 8) it fits, with the derived block count as its
    ``total_kv_blocks`` and an empty ``vllm_version``, and a second row at the smallest
    TP whose cache holds one request of its ``max_position_embeddings`` tokens when the
    first does not (vLLM's default ``max_model_len``; docs/catalog.md); roofline runs take
    any GPU and TP.
    The keyword arguments are the engine settings the derived capacity assumes
    (``block_size`` None: the size vLLM would use for the model and GPU, as a run without
    ``--block-size-in-tokens``: 16, or 64 for MLA models on Hopper).
    """
    settings = {
        "block_size": block_size,
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_num_batched_tokens": max_num_batched_tokens,
    }
    architectures = bundled_architectures()
    rows: list[dict[str, Any]] = []
    for model in catalog.model_ids():
        defaults = catalog.model_defaults(model)
        default_set = (
            catalog.find_coefficients(model, defaults.gpu, defaults.tp, defaults.vllm_version)
            if defaults is not None
            else None
        )
        seen: set[tuple[str, int, str]] = set()
        for cs in catalog.coefficient_sets(model):
            key = (cs.gpu, cs.tp, cs.vllm_version)
            if key in seen:
                continue
            seen.add(key)
            arch = architectures.get(model)
            gpu = _gpu_or_none(catalog, cs.gpu)
            roofline = arch is not None and gpu is not None
            derived = _derived_blocks(arch, gpu, cs.tp, settings)
            rows.append(
                {
                    "model": model,
                    "gpu": cs.gpu,
                    "tp": cs.tp,
                    "vllm_version": cs.vllm_version,
                    "latency_modes": "blackbox,roofline,calibrated" if roofline else "blackbox",
                    "total_kv_blocks": cs.instance_kv_blocks,
                    "derived_kv_blocks": "" if derived is None else derived,
                    "default": cs is default_set,
                }
            )
    gpu = _gpu_or_none(catalog, _ROOFLINE_ONLY_GPU)
    for model, arch in architectures.items():
        if catalog.coefficient_sets(model) or gpu is None:
            continue
        for tp, derived in _roofline_only_tps(arch, gpu, settings):
            rows.append(
                {
                    "model": model,
                    "gpu": gpu.name,
                    "tp": tp,
                    "vllm_version": "",
                    "latency_modes": "roofline,calibrated",
                    "total_kv_blocks": "" if derived is None else derived,
                    "derived_kv_blocks": "" if derived is None else derived,
                    "default": False,
                }
            )
    rows.sort(key=lambda r: (r["model"], r["gpu"], r["tp"], r["vllm_version"]))
    return rows


def _fitting_tps(
    arch: ModelArchitecture, gpu: GpuSpec, settings: dict[str, Any]
) -> list[tuple[int, int]]:
    """Each TP of 1, 2, 4, 8 that vLLM accepts for the model (``tp_problem``) and at which
    it fits ``gpu`` with room for a KV cache, with its derived block count."""
    out: list[tuple[int, int]] = []
    for tp in _TP_CHOICES:
        if arch.tp_problem(tp):
            continue
        derived = _derived_blocks(arch, gpu, tp, settings)
        if derived is not None:
            out.append((tp, derived))
    return out


def _holds_max_position(
    arch: ModelArchitecture, gpu: GpuSpec, blocks: int, settings: dict[str, Any]
) -> bool:
    """Whether ``blocks`` hold one request of the model's ``max_position_embeddings``
    tokens, which vLLM needs to start at its default ``max_model_len`` (unknown: yes)."""
    limit = arch.max_position_embeddings
    return limit <= 0 or blocks * _block_size(arch, gpu, settings) >= limit


def _roofline_only_tps(
    arch: ModelArchitecture, gpu: GpuSpec, settings: dict[str, Any]
) -> list[tuple[int, int | None]]:
    """The rows ``blis models`` lists for a model without coefficients: the smallest TP
    at which it fits, and, when that cache cannot hold one request of the model's
    ``max_position_embeddings`` tokens (vLLM would start it only with a shorter
    ``--max-model-len``), also the smallest TP whose cache can, if one of 1, 2, 4, 8 does
    (Llama-3.1-70B on H100: TP 2, 28 176 tokens, and TP 4). (8, None) when none fits."""
    fitting = _fitting_tps(arch, gpu, settings)
    if not fitting:
        return [(_TP_CHOICES[-1], None)]
    rows: list[tuple[int, int | None]] = [fitting[0]]
    if not _holds_max_position(arch, gpu, fitting[0][1], settings):
        starts = [(tp, b) for tp, b in fitting if _holds_max_position(arch, gpu, b, settings)]
        rows.extend(starts[:1])
    return rows


def suggested_deployment(catalog: Catalog, arch: ModelArchitecture) -> tuple[str, int] | None:
    """The (GPU, TP) ``blis models`` suggests for a model with an architecture and no
    coefficients (H100, default engine settings): the smallest TP of 1, 2, 4, 8 whose KV
    cache holds one request of the model's ``max_position_embeddings`` tokens, so that
    vLLM starts it at its default ``max_model_len``; else the smallest TP it fits; None
    when it fits no TP up to 8 there (or the catalog has no H100)."""
    gpu = _gpu_or_none(catalog, _ROOFLINE_ONLY_GPU)
    if gpu is None:
        return None
    settings = {"block_size": None, "gpu_memory_utilization": 0.9, "max_num_batched_tokens": 2048}
    tp, derived = _roofline_only_tps(arch, gpu, settings)[-1]
    return (gpu.name, tp) if derived is not None else None


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    return str(value)


def format_models_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render rows as a left-aligned, space-separated text table with a header.

    Plain text (no box drawing) keeps the output easy to ``grep`` and ``awk``.
    Numeric columns are right-aligned so magnitudes line up.
    """
    header = [c.upper() for c in MODELS_TABLE_COLUMNS]
    body = [[_cell(row.get(c, "")) for c in MODELS_TABLE_COLUMNS] for row in rows]
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    numeric = {"tp", "total_kv_blocks", "derived_kv_blocks"}

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if col in numeric else cell.ljust(w)
            for cell, w, col in zip(cells, widths, MODELS_TABLE_COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(cells) for cells in body)])
