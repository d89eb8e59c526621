"""Workloads given as Python objects (a spec mapping, a DataFrame) split out of raw options.

Lives in the config layer because it reads option names (either spelling); the objects
go to :class:`inference_sim.workload.plan.InlineWorkload`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from inference_sim.config.options import canonical_name
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.plan import INLINE_SPEC, InlineWorkload


def _is_path(value: Any) -> bool:
    return value is None or isinstance(value, str | os.PathLike)


def split_inline(raw: Mapping[str, Any]) -> tuple[dict[str, Any], InlineWorkload]:
    """``raw`` with inline workloads replaced by placeholders, and the workloads themselves.

    A mapping as ``workload_spec`` is a spec; a DataFrame or a list of mappings as
    ``workload_traces_filepath`` is a length trace (``workload`` becomes ``traces``
    unless given). The placeholders say what was given (``<inline spec>``,
    ``<DataFrame: N rows>``); :func:`resolve_workload_options` puts the spec mapping
    back into the options, so the results' ``config`` repeats the run.
    """
    out = dict(raw)
    inline = InlineWorkload()
    for key in list(out):
        name = canonical_name(str(key))
        value = out[key]
        if name == "workload_spec" and isinstance(value, Mapping):
            inline.spec = value
            out[key] = INLINE_SPEC
        elif name == "workload_traces_filepath" and not _is_path(value):
            inline.trace, out[key] = _trace_rows(value)
            if not any(canonical_name(str(k)) == "workload" for k in out):
                out["workload"] = "traces"
    return out, inline


def _trace_rows(value: Any) -> tuple[list[Mapping[str, Any]], str]:
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        rows = value.to_dict("records")
        return rows, f"<DataFrame: {len(rows)} rows>"
    if isinstance(value, list | tuple) and all(isinstance(r, Mapping) for r in value):
        return list(value), f"<list: {len(value)} rows>"
    raise WorkloadError(
        "trace: expected a file path, a pandas DataFrame or a list of dicts with length "
        f"columns (prompt_len, output_len, ...), got {type(value).__name__}"
    )
