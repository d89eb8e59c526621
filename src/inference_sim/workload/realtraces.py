"""Production traces: the Azure LLM inference CSV and Mooncake-style JSON lines.

Both record lengths, not token ids; replays synthesise ids (see
:mod:`inference_sim.workload.tokens`) from the run seed.

* **Azure** (``TIMESTAMP,ContextTokens,GeneratedTokens``): wall-clock timestamps become
  microseconds after the first row; every prompt is unique (the trace has no prefix
  information).
* **Mooncake** (``{"timestamp": ms, "input_length", "output_length", "hash_ids"}``):
  timestamps become microseconds after the first row too. The published traces start at
  0, but a slice cut from the middle (``tail -1000``) does not; counted from 0 its first
  arrival would come after an hour of idle simulated time, inflating the run's duration
  and cost and dropping every row past ``--horizon``. (The reference's token-id CSV keeps
  its absolute times, as the reference does.) One
  hash id per ``block_size``-token block of the prompt (512 in the published traces; the
  last block may be partial). Each hash id stands for a fixed block of synthetic tokens,
  so two prompts with the same leading hash ids start with exactly the same tokens and
  share exactly those KV blocks; a partial last block shares its tokens with the start of
  the same id's full block. A file whose first line has no ``hash_ids`` (Mooncake's
  field names, lengths only) replays with unique prompts; its timestamps are still
  milliseconds (read as a length trace they would be taken as seconds: 1000x slower).
  Every line must then agree with the first on having ``hash_ids`` or not.

Rows must be in time order (both published traces are); inputs longer than a model's
context are replayed as they are (use ``--max-model-len`` to reject them). Given a
horizon, reading stops at the first row arriving later than it (a row exactly at the
horizon is replayed), as the reference's CSV reader does: the simulator reads one request
ahead, and a row it never injects must not reach ``--export-trace``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.workload._gc import gc_paused
from inference_sim.workload._rows import BoundedCsvReader, RowTooLong, bounded_lines
from inference_sim.workload.errors import MAX_ARRIVAL_US, WorkloadError
from inference_sim.workload.samplers import check_length_bound
from inference_sim.workload.tokens import block_keys, block_tokens, stable_key, synth_tokens

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
DEFAULT_TRACE_BLOCK_SIZE = 512
NEVER = 2**63 - 1
_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_STAMP = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*"
    r"(?:Z|([+-])(\d{2})(?::?(\d{2}))?)?\s*$"
)


@dataclass(frozen=True, slots=True)
class LengthRecord:
    """One trace row: where it is, when it arrives (µs), its lengths, its block ids."""

    line: int
    arrival: int
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] | None = None


def _open(path: str, what: str):
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise WorkloadError(f"{what} {path}: file not found") from None
    except OSError as exc:
        raise WorkloadError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


# --- Azure --------------------------------------------------------------------------------


def is_utc_time(text: str) -> bool:
    """Whether ``text`` is written as a ``YYYY-MM-DD HH:MM:SS`` time (not plain seconds)."""
    return _STAMP.match(text) is not None


def seconds_to_us(seconds: float, text: object) -> int:
    """Plain seconds -> integer µs; ``text`` is how the value appears in the error.

    The product is checked before rounding: ``1e303 * 1e6`` is infinity, which ``round``
    cannot turn into an integer (the run ended in "OverflowError: cannot convert float
    infinity to integer", naming no line). Finite values of any size pass: the readers
    bound the arrival after the first row (at most 2^62 µs, :data:`MAX_ARRIVAL_US`)."""
    if not math.isfinite(seconds):
        raise ValueError(f"not a timestamp: {text!r}")
    micros = seconds * 1_000_000
    if not math.isfinite(micros):
        raise ValueError(
            f"{text} s is out of range; arrivals may be at most "
            f"{MAX_ARRIVAL_US / 1_000_000:g} s after the first row"
        )
    return round(micros)


def parse_timestamp_us(text: str) -> int:
    """``2023-11-16 18:17:03.9799600`` (UTC unless an offset follows) or plain seconds ->
    integer µs since the epoch (UTC).

    An offset (``Z``, ``+02:00``, ``-0530``, ``+02``) converts the time to UTC:
    ``02:00+02:00`` is ``00:00`` UTC, so a trace whose rows change offset (a
    daylight-saving switch) keeps its true gaps. Digits past the sixth of a fraction are
    dropped (µs resolution). The calendar fields are checked (hour 0-23, minute and
    second 0-59, a day the month has, an offset of at most 23:59): ``calendar.timegm``
    would turn ``25:15:50`` or February 30 into another, valid time without a word,
    shifting every later arrival of the trace. Plain seconds too large to count in µs as
    a float are an error (:func:`seconds_to_us`)."""
    m = _STAMP.match(text)
    if m is None:
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(f"not a timestamp: {text!r}") from None
        return seconds_to_us(seconds, text.strip())
    y, mo, d, h, mi, s, frac, sign, off_h, off_m = m.groups()
    tz = UTC
    try:
        if sign is not None:
            off_m = off_m or "00"
            if int(off_h) > 23 or int(off_m) > 59:
                raise ValueError(f"a UTC offset is at most 23:59, got {off_h}:{off_m}")
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        when = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
    except ValueError as exc:  # "hour must be in 0..23", "day is out of range for month"
        raise ValueError(f"not a valid date and time: {text.strip()!r} ({exc})") from None
    whole = (when - _EPOCH) // _SECOND
    micros = int((frac or "0")[:6].ljust(6, "0"))
    return whole * 1_000_000 + micros


def iter_azure_records(path: str | os.PathLike[str]) -> Iterator[LengthRecord]:
    """Rows of an Azure trace, arrivals relative to the first row."""
    p = os.fspath(path)
    return _azure_records(_open(p, "azure trace"), p)


def _azure_records(fh, p: str) -> Iterator[LengthRecord]:
    with fh:
        reader = BoundedCsvReader(fh)
        line = 1
        try:
            header = next(reader, None)
            if header is None:
                raise WorkloadError(f"azure trace {p}: file is empty, expected a header row")
            names = [h.strip().lower() for h in header]
            cols = []
            for want in AZURE_COLUMNS:
                if want.lower() not in names:
                    raise WorkloadError(
                        f"azure trace {p} line 1: missing column {want} "
                        f"(header has: {', '.join(h.strip() for h in header)})"
                    )
                cols.append(names.index(want.lower()))
            ts_col, in_col, out_col = cols
            first: int | None = None
            prev = -1
            line = reader.line_num + 1
            for row in reader:
                if not row:
                    line = reader.line_num + 1
                    continue
                where = f"azure trace {p} line {line}"
                if len(row) != len(header):
                    raise WorkloadError(
                        f"{where}: row has {len(row)} fields, the header has {len(header)}"
                    )
                try:
                    stamp = parse_timestamp_us(row[ts_col])
                except ValueError as exc:
                    raise WorkloadError(f"{where}: TIMESTAMP: {exc}") from None
                n_in = _count(row[in_col], "ContextTokens", where, 1)
                n_out = _count(row[out_col], "GeneratedTokens", where, 0)
                if first is None:
                    first = stamp
                arrival = stamp - first
                if arrival < prev:
                    raise WorkloadError(
                        f"{where}: TIMESTAMP goes back in time; rows must be sorted by time"
                    )
                # The simulated clock ends at 2^63 µs: a later row (9.3e12 s) was dropped
                # as if past the horizon, the run ending without a word; the length
                # reader and the reference CSV refuse it too.
                if arrival > MAX_ARRIVAL_US:
                    raise WorkloadError(
                        f"{where}: TIMESTAMP is {arrival / 1e6:g} s after the first row; "
                        f"at most {MAX_ARRIVAL_US / 1e6:g} s"
                    )
                prev = arrival
                yield LengthRecord(line, arrival, n_in, n_out)
                line = reader.line_num + 1
            if first is None:
                raise WorkloadError(f"azure trace {p}: no requests (only a header)")
        except RowTooLong as exc:
            raise WorkloadError(f"azure trace {p} line {line}: {exc}") from None
        except csv.Error as exc:
            raise WorkloadError(f"azure trace {p} line {line}: malformed CSV: {exc}") from None
        except UnicodeDecodeError:
            raise WorkloadError(f"azure trace {p}: not UTF-8 text") from None


def _count(text: str, column: str, where: str, lowest: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise WorkloadError(f"{where}: {column} {text!r} is not an integer") from None
    if value < lowest:
        raise WorkloadError(f"{where}: {column} must be >= {lowest}, got {value}")
    check_length_bound(value, f"{where}: {column}")
    return value


def iter_azure_trace(
    path: str | os.PathLike[str],
    *,
    streams: RandomStreams | None = None,
    seed: int = 0,
    horizon: int = NEVER,
) -> Iterator[Request]:
    """Replay an Azure trace: unique synthetic prompts, arrivals from the timestamps.

    Reading stops at the first row later than ``horizon`` (one at it is replayed)."""
    streams = streams or RandomStreams(seed)
    records = iter_azure_records(path)
    base = int(streams.generator("trace-replay").integers(0, 2**63 - 1))
    return _unique_prompts(_until(records, horizon), base)


def _until(records: Iterator[LengthRecord], horizon: int) -> Iterator[LengthRecord]:
    """``records`` up to the first one arriving after ``horizon`` (the reference CSV's
    rule: a row exactly at the horizon is kept, the simulator injects it)."""
    for rec in records:
        if rec.arrival > horizon:
            return
        yield rec


def _unique_prompts(records: Iterator[LengthRecord], base: int) -> Iterator[Request]:
    with gc_paused():
        for i, rec in enumerate(records):
            yield Request(
                i,
                rec.arrival,
                synth_tokens(stable_key(base, "in", i), 0, rec.input_tokens),
                synth_tokens(stable_key(base, "out", i), 0, rec.output_tokens),
            )


# --- Mooncake -----------------------------------------------------------------------------


def iter_mooncake_records(
    path: str | os.PathLike[str],
    *,
    block_size: int = DEFAULT_TRACE_BLOCK_SIZE,
    block_flag: str = "--trace-block-size",
) -> Iterator[LengthRecord]:
    """Rows of a Mooncake JSONL trace, arrivals (``timestamp``: ms) in µs after the first row.

    ``block_flag`` names the option that set ``block_size`` in error messages
    (``blis workload describe`` calls it ``--block-size``)."""
    if block_size <= 0:
        raise WorkloadError(f"{block_flag} must be > 0, got {block_size}")
    p = os.fspath(path)
    return _mooncake_records(_open(p, "mooncake trace"), p, block_size, block_flag)


def _mooncake_records(fh, p: str, block_size: int, block_flag: str) -> Iterator[LengthRecord]:
    with fh:
        prev = -1
        line = 0
        hashed: bool | None = None  # whether the rows have hash_ids (the first row decides)
        first: int | None = None  # the first row's timestamp (µs); arrivals count from it
        first_line = 0
        try:
            for line, text in bounded_lines(fh):
                if not text.strip():
                    continue
                where = f"mooncake trace {p} line {line}"
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise WorkloadError(f"{where}: invalid JSON ({exc.msg})") from None
                except RecursionError:
                    raise WorkloadError(f"{where}: invalid JSON (nested too deeply)") from None
                if not isinstance(row, dict):
                    raise WorkloadError(f"{where}: expected a JSON object")
                for name in MOONCAKE_FIELDS[:3]:
                    if name not in row:
                        raise WorkloadError(f"{where}: missing field {name}")
                if hashed is None:
                    hashed, first_line = "hash_ids" in row, line
                elif hashed != ("hash_ids" in row):
                    has = "has" if hashed else "has no"
                    raise WorkloadError(
                        f"{where}: {'missing field hash_ids' if hashed else 'has hash_ids'}, "
                        f"but line {first_line} {has} hash_ids; give them on every line or "
                        "on none (without them every prompt is unique)"
                    )
                ts = row["timestamp"]
                if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
                    hint = ""
                    if isinstance(ts, str) and is_utc_time(ts) and not hashed:
                        hint = "; a length trace with UTC times: --trace-format lengths"
                    raise WorkloadError(
                        f"{where}: timestamp must be a number (ms), got {ts!r}{hint}"
                    )
                if ts < 0:
                    raise WorkloadError(f"{where}: timestamp must be >= 0, got {ts}")
                if ts > _MAX_TIMESTAMP_MS:
                    raise WorkloadError(
                        f"{where}: timestamp must be <= {_MAX_TIMESTAMP_MS:g} ms, got {ts}"
                    )
                stamp = round(ts * 1000)
                if first is None:
                    first = stamp
                arrival = stamp - first
                n_in = _json_count(row["input_length"], "input_length", where, 1)
                n_out = _json_count(row["output_length"], "output_length", where, 0)
                ids = _hash_ids(row, n_in, block_size, block_flag, where) if hashed else None
                if arrival < prev:
                    raise WorkloadError(
                        f"{where}: timestamp goes back in time; rows must be sorted by time"
                    )
                prev = arrival
                yield LengthRecord(line, arrival, n_in, n_out, ids)
        except RowTooLong as exc:
            raise WorkloadError(f"mooncake trace {p} line {exc.line}: {exc}") from None
        except UnicodeDecodeError:
            raise WorkloadError(f"mooncake trace {p} line {line + 1}: not UTF-8 text") from None


def _hash_ids(
    row: dict[str, object], n_in: int, block_size: int, block_flag: str, where: str
) -> tuple[int, ...]:
    """A row's ``hash_ids``: 64-bit integers, one per ``block_size``-token block."""
    ids = row["hash_ids"]
    if not isinstance(ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in ids
    ):
        raise WorkloadError(f"{where}: hash_ids must be a list of integers")
    if ids and not (min(ids) >= -(2**63) and max(ids) < 2**63):
        bad = min(ids) if min(ids) < -(2**63) else max(ids)
        raise WorkloadError(f"{where}: hash_ids must be 64-bit integers (within ±2^63), got {bad}")
    need = -(-n_in // block_size)
    if len(ids) != need:
        raise WorkloadError(
            f"{where}: {len(ids)} hash_ids, but input_length {n_in} makes {need} "
            f"blocks of {block_size} tokens (is {block_flag} right?)"
        )
    return tuple(ids)


#: Latest Mooncake timestamp (ms): 2^62 µs, far beyond any trace, below the clock's end.
_MAX_TIMESTAMP_MS = 2**62 / 1000


def _json_count(value: object, name: str, where: str, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise WorkloadError(f"{where}: {name} must be an integer, got {value!r}")
    if value < lowest:
        raise WorkloadError(f"{where}: {name} must be >= {lowest}, got {value}")
    check_length_bound(value, f"{where}: {name}")
    return value


def iter_mooncake_trace(
    path: str | os.PathLike[str],
    *,
    streams: RandomStreams | None = None,
    seed: int = 0,
    block_size: int = DEFAULT_TRACE_BLOCK_SIZE,
    horizon: int = NEVER,
) -> Iterator[Request]:
    """Replay a Mooncake trace; equal leading hash ids give equal leading tokens.

    Reading stops at the first row later than ``horizon`` (one at it is replayed)."""
    streams = streams or RandomStreams(seed)
    records = iter_mooncake_records(path, block_size=block_size)
    base = int(streams.generator("trace-replay").integers(0, 2**63 - 1))
    return _hashed_prompts(_until(records, horizon), base, block_size)


def _hashed_prompts(
    records: Iterator[LengthRecord], base: int, block_size: int
) -> Iterator[Request]:
    block_base = stable_key(base, "hash-block")
    with gc_paused():
        for i, rec in enumerate(records):
            if rec.hash_ids is None:  # no hash_ids in the file: a unique prompt
                yield Request(
                    i,
                    rec.arrival,
                    synth_tokens(stable_key(base, "in", i), 0, rec.input_tokens),
                    synth_tokens(stable_key(base, "out", i), 0, rec.output_tokens),
                )
                continue
            keys = block_keys(block_base, rec.hash_ids)
            yield Request(
                i,
                rec.arrival,
                block_tokens(keys, block_size, rec.input_tokens),
                synth_tokens(stable_key(base, "out", i), 0, rec.output_tokens),
                # --export-trace writes these, so a trace v2 replay rebuilds the same ids.
                metadata={"hash_ids": rec.hash_ids or (), "hash_block_size": block_size},
            )
