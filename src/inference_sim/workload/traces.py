"""Legacy CSV trace replay (``--workload traces``) and the matching exporter.

Format (the reference's): a header row, then one request per row with at least five
columns ``arrival_s, id, model, input_tokens, output_tokens``. The arrival is in seconds
(converted to µs by truncation), the token columns are JSON lists of ids and are quoted by
the CSV writer because they contain commas. Columns past the fifth are ignored so traces
with extra annotations still load, except two the header may name: ``adapter`` (the
request's LoRA adapter) and ``adapter_rank`` (docs/lora.md).

Rows keep file order (the event queue sorts arrivals, not the reader) and reading stops at
the first row later than the horizon, as in the reference (a warning counts the later rows
within the horizon an unsorted trace loses that way). Unlike the reference, every problem
is reported as one :class:`WorkloadError` naming the file, the line and the column.

:func:`write_csv_trace` emits exactly what :func:`read_csv_trace` reads, so a generated
workload can be exported once and replayed (or fed to the reference) bit for bit.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from inference_sim.core.outfiles import OutputFile
from inference_sim.core.request import Request
from inference_sim.workload._gc import gc_paused
from inference_sim.workload._rows import BoundedCsvReader, RowTooLong
from inference_sim.workload.errors import MAX_ARRIVAL_US, WorkloadError
from inference_sim.workload.samplers import MAX_REQUEST_TOKENS

log = logging.getLogger("inference_sim")

TRACE_FLAG = "--workload-traces-filepath"
HEADER = ("arrival_time", "request_id", "model", "prefill_tokens", "decode_tokens")
"""Header written by :func:`write_csv_trace` (the reference README's column names)."""
ADAPTER_COLUMNS = ("adapter", "adapter_rank")
"""Columns :func:`write_csv_trace` adds when requests run LoRA adapters (docs/lora.md)."""

_COLUMNS = "(arrival_s, id, model, input_tokens, output_tokens)"
_NO_HORIZON = 2**63 - 1
_DECODER = json.JSONDecoder()  # reused: skips json.loads' per-call keyword handling
_MAX_SHOWN = 40  # characters of a bad value quoted in an error message
_MAX_TOKEN_ID = 2**31 - 1  # token ids are stored as int32


def _shown(text: str) -> str:
    """A short, single-line rendering of a bad cell for an error message."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text)


def _parse_arrival(text: str, where: str) -> int:
    """Seconds as float text -> integer µs, truncated like the reference (``trunc(x*1e6)``)."""
    try:
        seconds = float(text)
    except ValueError:
        raise WorkloadError(f"{where}: not a number: {_shown(text)}") from None
    if not math.isfinite(seconds) or seconds < 0.0:
        raise WorkloadError(f"{where}: must be a finite number of seconds >= 0, got {_shown(text)}")
    if seconds * 1e6 > MAX_ARRIVAL_US:
        raise WorkloadError(
            f"{where}: must be <= {MAX_ARRIVAL_US / 1e6:g} seconds, got {_shown(text)} "
            "(arrivals are seconds from the start of the trace)"
        )
    return int(seconds * 1e6)


def _parse_tokens(text: str, where: str, *, need_one: bool) -> list[int]:
    """A JSON list of non-negative integer token ids; ``need_one`` forbids an empty list."""
    # Counted before decoding: a list of more ids than any request may hold is refused
    # without building it (the row limit of _rows already bounds the text itself).
    if text.count(",") >= MAX_REQUEST_TOKENS:
        raise WorkloadError(
            f"{where}: more than {MAX_REQUEST_TOKENS} token ids (the longest request the "
            "simulator holds)"
        )
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{where}: invalid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise WorkloadError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(value, list):
        raise WorkloadError(
            f"{where}: expected a JSON list of token ids, got {type(value).__name__}"
        )
    # Exact type test (C-speed via map): JSON true/false load as bool, an int subclass.
    if value and set(map(type, value)) != {int}:
        bad = next(tok for tok in value if type(tok) is not int)
        raise WorkloadError(f"{where}: token ids must be integers, got {json.dumps(bad)}")
    if value and min(value) < 0:
        raise WorkloadError(f"{where}: token ids must be >= 0, got {min(value)}")
    if value and max(value) > _MAX_TOKEN_ID:
        raise WorkloadError(f"{where}: token ids must be <= {_MAX_TOKEN_ID}, got {max(value)}")
    if need_one and not value:
        raise WorkloadError(f"{where}: empty list, at least one prompt token is required")
    return value


def read_csv_trace(path: str | os.PathLike[str], *, horizon: int = _NO_HORIZON) -> list[Request]:
    """Load a reference-format CSV trace into requests, in file order.

    ``Request.index`` is the 0-based data-row index. As in the reference, the first row
    whose arrival is greater than ``horizon`` ends reading (a row exactly at the horizon
    is kept); later rows within the horizon (an unsorted trace) are not read, and a
    warning says how many. A header with no rows gives no requests and a warning. Blank
    lines are skipped, like Go's CSV reader.
    """
    p = os.fspath(path)
    try:
        handle = open(p, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise WorkloadError(f"{TRACE_FLAG}: file not found: {p}") from None
    except OSError as exc:
        raise WorkloadError(f"{TRACE_FLAG}: cannot read {p}: {exc.strerror or exc}") from None

    requests: list[Request] = []
    line = 0  # 1-based line where the current record starts
    with handle, gc_paused():
        reader = BoundedCsvReader(handle)
        try:
            header: list[str] = []
            while not header:
                line = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    raise WorkloadError(f"trace {p}: file is empty, expected a header row")
                header = row
            if _is_number(header[0]):  # data where the header should be: say so
                raise WorkloadError(
                    f"trace {p} row {line}: expected a header row {_COLUMNS}, got data "
                    f"({header[0]!r} is a number); add the header line, or the first request "
                    "would be lost"
                )
            line = reader.line_num + 1
            names = [h.strip() for h in header]
            lora = tuple(names.index(c) if c in names[5:] else -1 for c in ADAPTER_COLUMNS)
            rows = 0
            for row in reader:
                if row:
                    rows += 1
                    req = _parse_row(row, p, line, len(requests), horizon)
                    if req is None:  # past the horizon: reading stops (the reference's rule)
                        _warn_rows_left(reader, p, line, horizon)
                        break
                    if lora != (-1, -1):
                        _lora_cells(req, row, lora, f"trace {p} row {line} column")
                    requests.append(req)
                line = reader.line_num + 1
            if not rows:
                log.warning("trace %s: no requests (only a header)", p)
        except RowTooLong as exc:
            raise WorkloadError(f"trace {p} row {line}: {exc}") from None
        except csv.Error as exc:
            raise WorkloadError(f"trace {p} row {line}: malformed CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise WorkloadError(
                f"trace {p}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        except OSError as exc:
            raise WorkloadError(f"trace {p}: cannot read: {exc.strerror or exc}") from None
    return requests


def _warn_rows_left(reader: Any, p: str, line: int, horizon: int) -> None:
    """Count the rows after the one that ended reading whose arrival is within the
    horizon (an unsorted trace): the reference drops them without a word; we say so."""
    within = 0
    for row in reader:
        if row:
            try:
                t = float(row[0])
            except ValueError:
                continue
            if math.isfinite(t) and t >= 0 and int(t * 1e6) <= horizon:
                within += 1
    if within:
        log.warning(
            "trace %s: reading stopped at row %d, the first later than --horizon (as the "
            "reference does); %d later rows within the horizon were not read: sort the "
            "trace by arrival time to replay them",
            p,
            line,
            within,
        )


def _is_number(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def _parse_row(row: list[str], p: str, line: int, index: int, horizon: int) -> Request | None:
    """One data row -> Request, or None when its arrival is beyond the horizon."""
    if len(row) < 5:
        raise WorkloadError(
            f"trace {p} row {line}: expected at least 5 columns {_COLUMNS}, got {len(row)}"
        )
    where = f"trace {p} row {line} column"
    arrival = _parse_arrival(row[0], f"{where} arrival_s")
    if arrival > horizon:
        return None
    input_tokens = _parse_tokens(row[3], f"{where} input_tokens", need_one=True)
    output_tokens = _parse_tokens(row[4], f"{where} output_tokens", need_one=False)
    # "explicit": --export-trace writes the ids themselves (trace v2 cannot express them).
    meta: dict[str, object] = {"token_ids": "explicit"}
    # Columns 1 (request id) and 2 (model) are not read, as the reference (workload.md
    # 4.2): the requests are request_<row> and served by the run's --model.
    return Request(index, arrival, input_tokens, output_tokens, metadata=meta)


def _lora_cells(req: Request, row: list[str], cols: tuple[int, int], where: str) -> None:
    """The optional adapter / adapter_rank cells (empty or missing: no adapter)."""
    a, r = cols
    req.adapter = row[a].strip() if 0 <= a < len(row) else ""
    text = row[r].strip() if 0 <= r < len(row) else ""
    if not text:
        return
    try:
        rank = int(text)
    except ValueError:
        rank = 0
    if rank < 1:
        raise WorkloadError(
            f"{where} adapter_rank: must be a whole number >= 1, got {_shown(text)}"
        )
    if not req.adapter:
        raise WorkloadError(f"{where} adapter_rank: needs an adapter name in the adapter column")
    req.adapter_rank = rank


def seconds_text(ticks: int) -> str:
    """Shortest decimal seconds text that reads back as exactly ``ticks`` µs.

    The reader truncates ``x * 1e6``, so the plain ``ticks / 1e6`` can come back one µs
    short (its product may land just below the integer). We step to the neighbouring
    floats until the product truncates to ``ticks``; ``repr`` of a float round-trips.
    """
    x = ticks / 1e6
    for _ in range(64):
        got = int(x * 1e6)
        if got == ticks:
            return repr(x)
        x = math.nextafter(x, math.inf if got < ticks else -math.inf)
    raise WorkloadError(f"arrival_time {ticks} µs cannot be written exactly in seconds")


def _token_text(tokens: Sequence[int]) -> str:
    """Compact JSON list (faster than json.dumps for long integer lists)."""
    return "[" + ",".join(map(str, tokens)) + "]"


def write_csv_trace(
    requests: Iterable[Request], path: str | os.PathLike[str], *, adapters: bool | None = None
) -> None:
    """Write ``requests`` in the format :func:`read_csv_trace` reads, atomically.

    The rows go to a temporary file in the target's directory that then replaces the
    target, so a crash or a bad request never leaves a half-written trace behind (a
    device or FIFO is written through: :mod:`inference_sim.core.outfiles`).

    LoRA adapters are kept: with ``adapters=True``, or by default when ``requests`` is a
    sequence in which some request names an adapter, the header gains the ``adapter``
    and ``adapter_rank`` columns the reader takes (the reference ignores columns past the
    fifth). Otherwise the file has the reference's five columns, and a request naming an
    adapter is a WorkloadError rather than an adapter silently dropped (a generator
    cannot be looked ahead: pass ``adapters=True``).
    """
    p = os.fspath(path)
    if adapters is None:
        adapters = isinstance(requests, Sequence) and any(r.adapter for r in requests)
    try:
        target = OutputFile(p, newline="")
    except OSError as exc:
        raise WorkloadError(f"trace {p}: cannot write: {exc.strerror or exc}") from None
    try:
        with target as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow((*HEADER, *ADAPTER_COLUMNS) if adapters else HEADER)
            for req in requests:
                if req.arrival_time < 0:
                    raise WorkloadError(
                        f"trace {p}: {req.request_id} has negative arrival_time "
                        f"{req.arrival_time}, cannot be replayed"
                    )
                if req.num_prompt_tokens == 0:
                    raise WorkloadError(
                        f"trace {p}: {req.request_id} has no prompt tokens, cannot be replayed"
                    )
                row = [
                    seconds_text(req.arrival_time),
                    req.request_id,
                    req.model,
                    _token_text(req.input_tokens),
                    _token_text(req.output_tokens),
                ]
                if adapters:
                    row += [req.adapter, str(req.adapter_rank) if req.adapter_rank else ""]
                elif req.adapter:
                    raise WorkloadError(
                        f"trace {p}: {req.request_id} runs LoRA adapter {req.adapter!r}, which "
                        "the five-column CSV would drop; pass adapters=True (adds the adapter "
                        "and adapter_rank columns) or export trace v2"
                    )
                writer.writerow(row)
    except OSError as exc:
        raise WorkloadError(f"trace {p}: cannot write: {exc.strerror or exc}") from None
