"""ServeGen data (``servegen_data``): one client per ``chunk-<ID>`` of a ServeGen directory.

A chunk is a pair of files. ``chunk-<ID>-trace.csv`` (no header) has rows
``start_s, rate, cv, pattern[, ...]``: the row with the highest rate inside the span gives
the client's rate fraction and arrival process (``Gamma``/``Weibull`` with that CV, anything
else Poisson). ``chunk-<ID>-dataset.json`` maps window start times to objects whose
``input_tokens`` and ``output_tokens`` strings hold Python-dict-like PDFs
(``"{100: 0.5, 200: 0.5}"``); the first window (in string order of its key) inside the span
with both PDFs non-empty gives the empirical length laws.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os

from inference_sim.core.inputs import load_json, read_text
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.samplers import empirical_from_pdf
from inference_sim.workload.schema import ArrivalSpec, ClientSpec, DistSpec, ServeGenSpec


def parse_pdf_text(text: str) -> dict[int, float]:
    """``"{100: 0.5, 200.0: 0.3,}"`` -> ``{100: 0.5, 200: 0.3}`` (later duplicates win)."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise WorkloadError(f"PDF text must be enclosed in braces, got {body[:40]!r}")
    body = body[1:-1].strip()
    if not body:
        raise WorkloadError("PDF text is empty")
    pdf: dict[int, float] = {}
    for piece in body.split(","):
        piece = piece.strip()
        if not piece:
            continue
        key, sep, value = piece.partition(":")
        if not sep:
            raise WorkloadError(f"PDF entry {piece!r} is not 'length: probability'")
        try:
            k = float(key.strip())
            v = float(value.strip())
        except ValueError:
            raise WorkloadError(f"PDF entry {piece!r} is not numeric") from None
        if not math.isfinite(k) or k < 0:
            raise WorkloadError(f"PDF entry {piece!r}: length must be a finite number >= 0")
        pdf[int(k)] = v
    return pdf


def _in_span(value: float, spec: ServeGenSpec) -> bool:
    if spec.span_start > 0 and value < spec.span_start:
        return False
    return not (spec.span_end > 0 and value >= spec.span_end)


def _best_row(path: str, spec: ServeGenSpec, warnings: list[str]) -> tuple[float, float, str]:
    """(rate, cv, pattern) of the highest-rate row inside the span (first on ties)."""
    best: tuple[float, float, str] | None = None
    skipped = 0
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if len(row) < 4:
                skipped += 1
                continue
            try:
                start, rate, cv = float(row[0]), float(row[1]), float(row[2])
            except ValueError:
                skipped += 1
                continue
            if not (math.isfinite(start) and math.isfinite(rate)):
                skipped += 1  # nan/inf parse as floats but are not a time or a rate
                continue
            if not _in_span(start, spec):
                continue
            if best is None or rate > best[0]:
                best = (rate, cv, row[3].strip())
    if skipped:
        warnings.append(f"{path}: skipped {skipped} malformed row(s)")
    return best if best is not None else (0.0, 0.0, "")


def _first_window(path: str, spec: ServeGenSpec, warnings: list[str]) -> tuple[str, str]:
    try:
        data = load_json(read_text(path))
    except FileNotFoundError:
        raise WorkloadError(f"dataset file {os.path.basename(path)} not found") from None
    except OSError as exc:
        raise WorkloadError(f"dataset file {os.path.basename(path)}: cannot read: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"parsing dataset JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WorkloadError("parsing dataset JSON: expected an object of windows")
    for key, window in data.items():
        if not isinstance(window, dict) or not all(isinstance(v, str) for v in window.values()):
            raise WorkloadError(f"parsing dataset JSON: window {key!r} must map names to strings")
    for key in sorted(data):
        try:
            start = float(key)
        except ValueError:
            warnings.append(f"{path}: skipped non-numeric window key {key!r}")
            continue
        if not _in_span(start, spec):
            continue
        inp = data[key].get("input_tokens", "")
        out = data[key].get("output_tokens", "")
        if inp and out:
            return inp, out
    raise WorkloadError("no valid PDF windows found in dataset")


def _resolve_dir(path: str, base_dir: str) -> str:
    if os.path.isdir(path) or os.path.isabs(path) or not base_dir:
        return path
    candidate = os.path.join(base_dir, path)
    return candidate if os.path.isdir(candidate) else path


def load_servegen_clients(
    spec: ServeGenSpec, *, base_dir: str = ""
) -> tuple[tuple[ClientSpec, ...], list[str]]:
    """Clients built from a ServeGen directory, plus warnings (skipped rows, keys)."""
    directory = _resolve_dir(spec.path, base_dir)
    if not os.path.isdir(directory):
        raise WorkloadError(f"servegen_data.path: directory not found: {spec.path}")
    traces = sorted(glob.glob(os.path.join(directory, "chunk-*-trace.csv")))
    if not traces:
        raise WorkloadError(f"servegen_data.path: no chunk-*-trace.csv files found in {directory}")
    warnings: list[str] = []
    clients: list[ClientSpec] = []
    for trace in traces:
        chunk = os.path.basename(trace)[len("chunk-") : -len("-trace.csv")]
        where = f"servegen_data: chunk {chunk}"
        try:
            rate, cv, pattern = _best_row(trace, spec, warnings)
            if rate <= 0:
                warnings.append(f"{where}: no row with a positive rate in the span, skipped")
                continue
            dataset = os.path.join(directory, f"chunk-{chunk}-dataset.json")
            inp, out = _first_window(dataset, spec, warnings)
            in_pdf = parse_pdf_text(inp)
            out_pdf = parse_pdf_text(out)
            empirical_from_pdf(in_pdf, "input_tokens")
            empirical_from_pdf(out_pdf, "output_tokens")
        except WorkloadError as exc:
            raise WorkloadError(f"{where}: {exc}") from None
        except OSError as exc:
            raise WorkloadError(f"{where}: cannot read: {exc.strerror or exc}") from None
        process = pattern.lower()
        arrival = ArrivalSpec("poisson")
        if process in ("gamma", "weibull"):
            if not (math.isfinite(cv) and cv > 0):
                raise WorkloadError(f"{where}: {pattern} row has cv {cv}; cv must be positive")
            if process == "weibull" and not 0.01 <= cv <= 10.4:
                raise WorkloadError(f"{where}: weibull CV must be in [0.01, 10.4], got {cv}")
            arrival = ArrivalSpec(process, cv)
        clients.append(
            ClientSpec(
                id=f"servegen-chunk-{chunk}",
                tenant_id=f"chunk-{chunk}",
                rate_fraction=rate,
                arrival=arrival,
                input_distribution=DistSpec("empirical", in_pdf),
                output_distribution=DistSpec("empirical", out_pdf),
            )
        )
    if not clients:
        raise WorkloadError(f"servegen_data.path: no valid chunks found in {directory}")
    return tuple(clients), warnings
