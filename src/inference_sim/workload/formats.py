"""Trace format detection and one entry point to replay any supported trace.

Formats: ``csv`` (the reference's token-id CSV), ``v2`` (trace v2 pair), ``azure``
(``TIMESTAMP,ContextTokens,GeneratedTokens``), ``mooncake`` (JSON lines with
``hash_ids``) and ``lengths`` (CSV or JSON lines of token counts, see
:mod:`inference_sim.workload.lengthtrace`). ``auto`` looks at the content: a JSON object
on the first line is Mooncake when it has ``hash_ids`` or Mooncake's three other fields
(``timestamp``, ``input_length``, ``output_length``: millisecond times, which a length
trace would take as seconds) with a numeric ``timestamp``, a length trace when it names a
prompt and an output length column (a ``timestamp`` written as a UTC time, which Mooncake
never has, included); a CSV header naming both is a length trace;
a YAML mapping with ``trace_version`` or a CSV header starting ``request_id,client_id`` is
trace v2, a CSV header with ``TIMESTAMP``, ``ContextTokens`` and ``GeneratedTokens`` is
Azure, any other CSV is the reference's format, unless its first row cannot be one (fewer
than five columns, or no JSON token list) and its header names some of another format's
columns (``TIMESTAMP``, ``GeneratedTokens``, a length column): then it is read as that
format, whose reader names the missing column (it used to fail as the reference's CSV,
"expected at least 5 columns", never naming the misspelt column). A header that matches
no format gets the reference reader's error and :func:`unmatched_header_hint`'s list of
the formats. Workload specs (YAML with ``clients``,
``inference_perf`` or ``servegen_data``) are recognised as ``spec`` by
:func:`detect_format` (used by ``blis workload describe``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import yaml

from inference_sim.core.inputs import load_yaml, read_text
from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.workload.errors import MAX_ARRIVAL_US, WorkloadError
from inference_sim.workload.lengthtrace import (
    OUTPUT_COLUMNS,
    PROMPT_COLUMNS,
    TIME_COLUMNS,
    iter_length_trace,
    looks_like_lengths,
)
from inference_sim.workload.realtraces import (
    AZURE_COLUMNS,
    DEFAULT_TRACE_BLOCK_SIZE,
    is_utc_time,
    iter_azure_trace,
    iter_mooncake_trace,
)
from inference_sim.workload.trace_v2 import COLUMNS as V2_COLUMNS
from inference_sim.workload.trace_v2 import iter_trace_v2
from inference_sim.workload.traces import read_csv_trace

TRACE_FORMATS = ("auto", "csv", "v2", "azure", "mooncake", "lengths")
NEVER = 2**63 - 1
_SNIFF_BYTES = 1 << 16
_MAX_YAML_SNIFF = 4 << 20
"""Largest file parsed as YAML to tell a spec or trace v2 header from a trace: YAML is
parsed whole, specs and headers are kilobytes, and a trace may be gigabytes."""


def _head(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise WorkloadError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise WorkloadError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return raw.decode("utf-8", errors="replace")


def detect_format(path: str | os.PathLike[str]) -> str:
    """``spec``, ``v2``, ``azure``, ``mooncake`` or ``csv`` from the file's content."""
    p = os.fspath(path)
    _check_rereadable(p)
    head = _head(p)
    lines = [ln for ln in head.splitlines() if ln.strip()]
    if not lines:
        raise WorkloadError(f"{p}: file is empty")
    first = lines[0].lstrip("\ufeff").strip()
    if first.startswith("{"):
        return _json_lines_format(first)
    ext = os.path.splitext(p)[1].lower()
    # JSON lines (the Mooncake format): its reader says what is wrong with a first line
    # that is not an object (``[1,2,3]`` used to read as a headerless CSV: 0 requests).
    if first.startswith("[") or ext in (".jsonl", ".ndjson"):
        return "mooncake"
    if ext in (".yaml", ".yml") or first.startswith("#") or not _looks_like_csv(first):
        data = _yaml_head(p, ext)
        if isinstance(data, dict):
            if "trace_version" in data:
                return "v2"
            return "spec"
        if ext in (".yaml", ".yml"):
            return "spec"
    cells = [c.strip().lower() for c in next(csv.reader(io.StringIO(first)))]
    if tuple(cells[:3]) == V2_COLUMNS[:3]:
        return "v2"
    if {"timestamp", "contexttokens", "generatedtokens"} <= set(cells):
        return "azure"
    if looks_like_lengths(cells):
        return "lengths"
    return _csv_or_near_miss(p, head, lines, first)


#: The reference CSV's columns (its reader needs at least these five, in this order).
_REFERENCE_COLUMNS = "arrival_s, id, model, input_tokens, output_tokens"


def _csv_or_near_miss(p: str, head: str, lines: list[str], first: str) -> str:
    """``csv`` (the reference's format, whose header names are free), unless the first
    data row cannot be one of its rows and the header names some of another format's
    columns: then that format, whose reader says which column is missing."""
    header = _header_cells(first)
    if not header or _is_number(header[0]):
        return "csv"  # no header: the reference reader says so
    row = _first_data_row(p, head, lines)
    if row is _TRUNCATED or (isinstance(row, list) and _fits_reference(row)):
        return "csv"
    return _near_format(header) or "csv"


def unmatched_header_hint(path: str | os.PathLike[str], format_flag: str = "--trace-format") -> str:
    """For a file detected as the reference's CSV whose first row is too short to be
    one (so its reader fails on it) and whose header, of fewer than five names, names no
    column of a known format: the text saying so and listing the formats; else ``""``.
    ``format_flag``: the option that names a format in the command at hand.

    The reference CSV's error on that row ("expected at least 5 columns") alone never
    said that the header was the problem (``time,ctx,gen``: a trace of another tool)."""
    p = os.fspath(path)
    try:
        head = _head(p)
    except WorkloadError:
        return ""
    lines = [ln for ln in head.splitlines() if ln.strip()]
    if not lines:
        return ""
    header = _header_cells(lines[0].lstrip("\ufeff").strip())
    if not header or _is_number(header[0]) or len(header) >= 5 or _near_format(header):
        return ""
    row = _first_data_row(p, head, lines)
    if not isinstance(row, list) or len(row) >= 5:
        return ""
    return (
        f"its header ({', '.join(header)}) matches no known trace format, so it was read "
        f"as the reference's CSV. Known formats: {_FORMATS_TEXT}. Fix the header or name "
        f"the format ({format_flag})"
    )


def _header_cells(first: str) -> list[str]:
    return [c.strip() for c in next(csv.reader(io.StringIO(first)), [])]


_FORMATS_TEXT = (
    f"csv ({_REFERENCE_COLUMNS}), azure ({', '.join(AZURE_COLUMNS)}), "
    f"lengths (a prompt-length column: {', '.join(PROMPT_COLUMNS)}; an output-length "
    f"column: {', '.join(OUTPUT_COLUMNS)}), v2 ({', '.join(V2_COLUMNS[:3])}, ...), "
    "mooncake (JSON lines with hash_ids)"
)

_TRUNCATED = object()


def _first_data_row(p: str, head: str, lines: list[str]) -> list[str] | object | None:
    """The cells of the row after the header; None without one; ``_TRUNCATED`` when it
    may run past the bytes read (a long token list: it cannot be judged)."""
    if len(lines) < 2:
        return None
    if len(lines) == 2:  # the last line read: whole only if the file was read whole
        try:
            if os.path.getsize(p) > _SNIFF_BYTES:
                return _TRUNCATED
        except OSError:
            return _TRUNCATED
    return next(csv.reader(io.StringIO(lines[1])), [])


def _fits_reference(row: list[str]) -> bool:
    """Whether ``row`` can be a reference CSV row: five columns, token ids a JSON list."""
    return len(row) >= 5 and row[3].strip().startswith("[")


def _near_format(header: list[str]) -> str:
    """``azure`` or ``lengths`` when ``header`` names some (not all) of that format's
    columns, else ``""``. ``TIMESTAMP`` counts for Azure written in capitals only (the
    lower-case one is a length trace's time column too)."""
    lower = {h.lower() for h in header}
    if "TIMESTAMP" in header or lower & {c.lower() for c in AZURE_COLUMNS[1:]}:
        return "azure"
    if lower & set(PROMPT_COLUMNS) or lower & set(OUTPUT_COLUMNS):
        return "lengths"
    if lower & (set(TIME_COLUMNS) - {"arrival_time", "arrival_s"}):  # the reference's too
        return "lengths"
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_MOONCAKE_KEYS = frozenset(("timestamp", "input_length", "output_length"))


def _json_lines_format(first: str) -> str:
    """``mooncake`` (``hash_ids``, or Mooncake's field names without them) or ``lengths``
    (length columns) from the first object.

    A Mooncake file without ``hash_ids`` names the same fields as a length trace can
    (``timestamp``, ``input_length``, ``output_length``), but its timestamps are
    milliseconds: read as a length trace it would run 1000 times slower. A ``timestamp``
    written as a UTC time (``"2023-11-16 18:17:03"``) is no Mooncake millisecond count,
    though: such a file is a length trace (it used to fail as Mooncake, "timestamp must
    be a number (ms)", without a word about ``--trace-format lengths``)."""
    try:
        obj = json.loads(first)
    except (json.JSONDecodeError, RecursionError):
        return "mooncake"  # its reader reports the line
    if not isinstance(obj, dict) or "hash_ids" in obj:
        return "mooncake"
    if obj.keys() >= _MOONCAKE_KEYS:
        stamp = obj["timestamp"]
        if not (isinstance(stamp, str) and is_utc_time(stamp)):
            return "mooncake"
    if looks_like_lengths([str(k) for k in obj]):
        return "lengths"
    return "mooncake"


def _check_rereadable(path: str) -> None:
    """Detection reads the start of the file, then the reader opens it again: a pipe
    (``<(cat t.csv)``) or a device would have lost that start, and the reader would see
    an empty or truncated file (issue 21). Such a path needs its format named."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # _head reports a missing or unreadable file
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        raise WorkloadError(
            f"{path}: a pipe or device can be read only once, so its format cannot be "
            "detected; name it (--trace-format, or --format for blis workload describe)"
        )


def _looks_like_csv(line: str) -> bool:
    return "," in line and ":" not in line.split(",")[0]


def _yaml_head(path: str, ext: str) -> object:
    try:
        if os.path.getsize(path) > _MAX_YAML_SNIFF:  # too big for a spec: a trace
            return {} if ext in (".yaml", ".yml") else None
        # Bounded even when getsize says 0 (a device or a pipe).
        return load_yaml(read_text(path, _MAX_YAML_SNIFF))
    except (yaml.YAMLError, ValueError, OSError):  # ValueError: an int of 5,000 digits
        if ext in (".yaml", ".yml"):
            return {}
        return None


def open_trace(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    streams: RandomStreams | None = None,
    seed: int = 0,
    block_size: int = DEFAULT_TRACE_BLOCK_SIZE,
    horizon: int = NEVER,
    arrival_times: Iterator[int] | None = None,
    run_server: Mapping[str, Any] | None = None,
    speedup: float = 1.0,
) -> Iterable[Request]:
    """Requests of a trace file in any supported format (``fmt`` or detected).

    ``arrival_times`` times the requests of a length trace that has no time column;
    ``horizon``: every format stops at the first request later than it (one exactly at
    it is replayed, the reference CSV's rule); ``run_server`` (the run's settings under
    the keys of a trace v2 header's ``server`` block) lets a trace v2 replay warn about
    the recorded settings that differ; ``speedup``: arrival times are divided by it
    (:func:`speed_up`), the horizon bounding the divided times."""
    p = os.fspath(path)
    if fmt not in TRACE_FORMATS:
        raise WorkloadError(
            f"--trace-format: unknown format {fmt!r}; valid: {', '.join(TRACE_FORMATS)}"
        )
    if not os.path.exists(p):
        raise WorkloadError(f"--workload-traces-filepath: file not found: {p}")
    detected = fmt == "auto"
    if detected:
        fmt = detect_format(p)
        if fmt == "spec":
            raise WorkloadError(
                f"{p}: this is a workload spec, not a trace; use --workload-spec {p}"
            )
    streams = streams or RandomStreams(seed)
    check_speedup(speedup)
    try:
        # The reader cuts at the recorded time the horizon maps back to (a little later:
        # float rounding); speed_up cuts exactly, on the divided times (1: no-ops).
        reqs = _open_format(
            p, fmt, streams, block_size, reader_horizon(horizon, speedup), arrival_times, run_server
        )
        return speed_up(reqs, speedup, horizon)
    except WorkloadError as exc:
        # The reference CSV is read whole here (a list), so its errors surface now.
        hint = unmatched_header_hint(p) if detected and fmt == "csv" else ""
        if hint:
            raise WorkloadError(f"{exc}; {hint}") from None
        raise


def _open_format(
    p: str,
    fmt: str,
    streams: RandomStreams,
    block_size: int,
    horizon: int,
    arrival_times: Iterator[int] | None,
    run_server: Mapping[str, Any] | None,
) -> Iterable[Request]:
    # Every reader stops at the first request later than the horizon (one at it is
    # replayed, as the reference's CSV reader does): the simulator reads one request
    # ahead, and --export-trace must not write a request the run never injected.
    if fmt == "csv":
        return read_csv_trace(p, horizon=horizon)
    if fmt == "v2":
        return iter_trace_v2(p, streams=streams, run=run_server, horizon=horizon)
    if fmt == "azure":
        return iter_azure_trace(p, streams=streams, horizon=horizon)
    if fmt == "lengths":
        return iter_length_trace(p, streams=streams, horizon=horizon, arrival_times=arrival_times)
    return iter_mooncake_trace(p, streams=streams, block_size=block_size, horizon=horizon)


# --- --trace-speedup ----------------------------------------------------------------------


def check_speedup(speedup: float) -> None:
    """``--trace-speedup``: a finite number > 0 (WorkloadError otherwise)."""
    if isinstance(speedup, bool) or not (
        isinstance(speedup, int | float) and math.isfinite(speedup) and speedup > 0
    ):
        raise WorkloadError(
            f"--trace-speedup must be a finite number > 0 (2: replay twice as fast, "
            f"0.5: half as fast), got {_shown(speedup)}"
        )


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def reader_horizon(horizon: int, speedup: float) -> int:
    """A recorded time no earlier than any whose division by ``speedup`` is within
    ``horizon`` (so a reader cutting there loses none of them)."""
    if speedup == 1.0 or horizon >= NEVER:
        return horizon
    bound = horizon * speedup * (1 + 1e-9)
    return NEVER if bound >= NEVER - 2 else min(NEVER, math.ceil(bound) + 1)


def speed_up(
    requests: Iterable[Request], speedup: float, horizon: int = NEVER
) -> Iterable[Request]:
    """``requests`` replayed ``speedup`` times faster: each arrival (µs from the trace's
    time origin) becomes ``round(arrival / speedup)``, so every gap is divided by
    ``speedup``. Stops at the first request whose divided arrival is later than
    ``horizon`` (one exactly at it is kept: the readers' rule). A list (the reference
    CSV) gives a list, an iterator an iterator; 1 returns ``requests`` unchanged.
    A divided arrival past the simulator's clock (2^62 µs) is an error."""
    check_speedup(speedup)
    if speedup == 1.0:
        return requests
    scaled = _speed_up(requests, float(speedup), horizon)
    return list(scaled) if isinstance(requests, list) else scaled


def _speed_up(requests: Iterable[Request], speedup: float, horizon: int) -> Iterator[Request]:
    for req in requests:
        t = req.arrival_time / speedup
        if t > horizon and horizon <= MAX_ARRIVAL_US:
            return
        if t > MAX_ARRIVAL_US:  # without a horizon before it: this row would be replayed
            raise WorkloadError(
                f"--trace-speedup {speedup:g}: request {req.index} would arrive "
                f"{t / 1e6:g} s after the trace's time origin, past the simulator's clock "
                f"(at most {MAX_ARRIVAL_US / 1e6:g} s); give a larger --trace-speedup"
            )
        req.arrival_time = round(t)
        yield req
