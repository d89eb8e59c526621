"""Tabular view of the catalog for ``blis models``.

The rows are plain dicts so the CLI can print them as text, JSON or CSV
without knowing about catalog internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .catalog import Catalog

__all__ = ["MODELS_TABLE_COLUMNS", "format_models_table", "models_table"]

#: Column order of :func:`models_table` rows and of the printed table.
MODELS_TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "gpu",
    "tp",
    "vllm_version",
    "latency_modes",
    "total_kv_blocks",
    "default",
)


def models_table(catalog: Catalog) -> list[dict[str, Any]]:
    """One row per deployment that has trained coefficients.

    Only the set that :meth:`Catalog.find_coefficients` would actually return
    is listed for each (model, GPU, TP, vLLM version): the data contains
    repeated training runs for some deployments, and showing the shadowed
    ones would suggest choices the simulator never makes.  ``default`` is true
    on the row the model's default deployment resolves to (at most one per
    model).  Rows are sorted by model, GPU, TP and then vLLM version.
    """
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
            rows.append(
                {
                    "model": model,
                    "gpu": cs.gpu,
                    "tp": cs.tp,
                    "vllm_version": cs.vllm_version,
                    "latency_modes": "blackbox",
                    "total_kv_blocks": cs.total_kv_blocks,
                    "default": cs is default_set,
                }
            )
    rows.sort(key=lambda r: (r["model"], r["gpu"], r["tp"], r["vllm_version"]))
    return rows


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
    numeric = {"tp", "total_kv_blocks"}

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if col in numeric else cell.ljust(w)
            for cell, w, col in zip(cells, widths, MODELS_TABLE_COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(cells) for cells in body)])
