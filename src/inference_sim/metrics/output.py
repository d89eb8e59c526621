"""Text and JSON renderings of results: the stdout report and the results file.

The results file is written atomically (temporary file in the same folder, then
rename), so a reader never sees half a file; devices and FIFOs are written through
(see :mod:`inference_sim.core.outfiles`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from inference_sim.core.outfiles import OutputPathError, check_output_file, write_json

#: Summary keys holding nested tables, written as their own sections (not in the metrics block).
NESTED_SUMMARY_KEYS = ("fitness_components", "slo_distributions", "tenant_metrics", "trace_summary")

# own sections (``fidelity``: results file and report only, docs/calibration.md)
_NOT_IN_METRICS_BLOCK = ("config", "slo_metrics", "fidelity", *NESTED_SUMMARY_KEYS)


#: Significant digits of unitless floats in text output (rates, fractions, scores).
TEXT_DIGITS = 6


def rounded(value: Any, key: str = "") -> Any:
    """``value`` with floats rounded for text output, inside lists and mappings too.

    Times keep the simulator's resolution, one µs: ``*_ms`` keys 3 decimals, ``*_s`` keys
    6; other floats 6 significant digits, the integer part never rounded
    (9.849901242132944 ms -> 9.85 ms, 19.98312749 requests/s -> 19.9831). The results
    file keeps every digit."""
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return value
        if key.endswith("_ms"):
            return round(value, 3)
        if key.endswith("_s"):
            return round(value, 6)
        exponent = math.floor(math.log10(abs(value)))
        return round(value, max(0, TEXT_DIGITS - 1 - exponent))
    if isinstance(value, Mapping):
        return {k: rounded(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, key) for v in value]
    return value


def metrics_block(summary: Mapping[str, Any]) -> str:
    """``=== Simulation Metrics ===`` and the summary JSON (without ``config``), floats
    rounded (:func:`rounded`)."""
    shown = {k: rounded(v, k) for k, v in summary.items() if k not in _NOT_IN_METRICS_BLOCK}
    return "=== Simulation Metrics ===\n" + json.dumps(shown, indent=2) + "\n"


def anomaly_block(summary: Mapping[str, Any]) -> str:
    counters = (
        ("Priority Inversions", int(summary.get("priority_inversions", 0))),
        ("HOL Blocking Events", int(summary.get("hol_blocking_events", 0))),
        ("Rejected Requests", int(summary.get("rejected_requests", 0))),
        ("Dropped Unservable", int(summary.get("dropped_unservable", 0))),
    )
    if not any(v for _, v in counters):
        return ""
    lines = ["=== Anomaly Counters ==="] + [f"{name}: {v}" for name, v in counters]
    return "\n".join(lines) + "\n"


def kv_block(summary: Mapping[str, Any]) -> str:
    completed = summary.get("completed_requests", 0)
    preemption_rate = summary.get("preemption_count", 0) / completed if completed else 0.0
    hit_rate = float(summary.get("prefix_cache_hit_rate", 0.0))
    thrashing = float(summary.get("kv_thrashing_rate", 0.0))
    if not (preemption_rate or hit_rate or thrashing):
        return ""
    return (
        "=== KV Cache Metrics ===\n"
        f"Preemption Rate: {preemption_rate:.4f}\n"
        f"Cache Hit Rate: {hit_rate:.4f}\n"
        f"KV Thrashing Rate: {thrashing:.4f}\n"
    )


def slo_block(summary: Mapping[str, Any]) -> str:
    """Per-SLO-class TTFT and E2E (µs, as the reference prints them); 2+ classes only."""
    per_slo = summary.get("slo_metrics") or {}
    if len(per_slo) < 2:
        return ""
    lines = ["=== Per-SLO Metrics ==="]
    for cls in sorted(per_slo):
        m = per_slo[cls]

        def us(key: str, m: Mapping[str, Any] = m) -> float:
            return round(float(m.get(key, 0.0)) * 1000.0, 6)  # ms -> µs without float noise

        lines.append(f"  {cls}:")
        lines.append(
            f"    TTFT (µs): mean={us('ttft_mean_ms'):.2f} p99={us('ttft_p99_ms'):.2f} "
            f"(n={int(m.get('ttft_count', 0))})"
        )
        lines.append(
            f"    E2E (µs):  mean={us('e2e_mean_ms'):.2f} p99={us('e2e_p99_ms'):.2f} "
            f"(n={int(m.get('e2e_count', 0))})"
        )
    return "\n".join(lines) + "\n"


class _StreamedArray(list):  # type: ignore[type-arg]
    """A JSON array whose items come from ``items`` while ``json.dump`` writes them.

    ``json.dump`` (with indent, the pure-Python encoder) only asks a list for its truth
    value and an iterator, so the records never exist all at once.
    """

    def __init__(self, items: Sequence[Any]) -> None:
        super().__init__()
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return len(self._items) > 0


def results_document(
    summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], *, stream: bool = False
) -> dict[str, Any]:
    """The results-file object: summary keys, then ``requests``, then ``config``.

    ``stream=True``: ``requests`` is written from ``records`` as ``json.dump`` goes
    (only for json.dump with an indent; other consumers need ``stream=False``)."""
    doc = {k: v for k, v in summary.items() if k != "config"}
    if records:
        doc["requests"] = _StreamedArray(records) if stream else list(records)
    if "config" in summary:
        doc["config"] = summary["config"]
    return doc


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise OSError now if ``path`` cannot be written later (checked before a run).

    The rules are :func:`inference_sim.core.outfiles.check_output_file`'s."""
    try:
        check_output_file(path)
    except OutputPathError as exc:
        raise OSError(str(exc)) from None


def write_json_atomic(path: str | os.PathLike[str], doc: Any) -> None:
    """Write ``doc`` as indented JSON (no trailing newline): atomically for a regular or
    new file, through for a device or FIFO (:mod:`inference_sim.core.outfiles`)."""
    write_json(path, doc)
