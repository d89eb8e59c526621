"""Length-only traces: token counts per request instead of token ids (``--trace-format lengths``).

Traces derived from ShareGPT for ``vllm bench``, Vidur's request traces and most
home-made request logs give each request's prompt and output length, not its tokens. A
CSV (header row) or JSON lines (one object a line) file is read with these column names
(case-insensitive; the first of each group present is used):

* arrival time, seconds, or a ``YYYY-MM-DD HH:MM:SS[.ffffff]`` UTC time: ``arrived_at``,
  ``arrival_time``, ``arrival_s``, ``timestamp``. Optional; times are relative to the first
  row and must not go back. Without one, requests arrive at ``--rate`` spaced as
  ``--arrival`` says (vLLM bench replays a dataset that way).
* prompt length (>= 1): ``num_prefill_tokens``, ``prompt_len``, ``prompt_length``,
  ``prompt_tokens``, ``input_len``, ``input_length``. Required.
* output length (>= 0): ``num_decode_tokens``, ``output_len``, ``output_length``,
  ``completion_tokens``, ``output_tokens_count``. Required.
* ``session_id`` (or ``conversation_id``): optional. A request of a session starts with
  the session's history (the previous request's prompt and output), up to its own prompt
  length, as a multi-turn chat resends it; the rest of its prompt is new.
* ``prefix_group`` with ``prefix_len`` (or ``prefix_length``): optional. Requests of one
  group start with the same ``prefix_len`` tokens (a shared system prompt).
* ``adapter`` with optional ``adapter_rank``: optional. The request's LoRA adapter (empty:
  the base model) and its rank (empty: the adapter's catalog rank), as in the reference
  CSV and trace v2 (docs/lora.md).

In JSON lines (and in-memory rows) the columns are the keys of every object, not just the
first: a key a line lacks (JSON writers drop null keys) reads as an empty CSV cell on that
line, so ``{"prompt_len": 5, "output_len": 1}`` followed by a line with an ``adapter``
runs the first request on the base model and the second on the adapter. An arrival time
is all or nothing (a line without one after lines with one is an error, and the other way
round), and two names of one column (``prompt_len`` on one line, ``input_len`` on another)
are an error naming the line.

Other columns (``request_id``, ``model``, ...) are ignored. Token ids are synthetic
(:mod:`inference_sim.workload.tokens`, keyed by the run seed), so no two prompts share a
token unless a session or prefix-group column says they do. The reference's CSV, whose
``input_tokens``/``output_tokens`` hold token-id lists, is a different format (``csv``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np

from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.workload._gc import gc_paused
from inference_sim.workload._rows import BoundedCsvReader, RowTooLong, bounded_lines
from inference_sim.workload.errors import MAX_ARRIVAL_US, WorkloadError
from inference_sim.workload.realtraces import parse_timestamp_us, seconds_to_us
from inference_sim.workload.samplers import check_length_bound
from inference_sim.workload.tokens import Segment, materialize, stable_key, take

TIME_COLUMNS = ("arrived_at", "arrival_time", "arrival_s", "timestamp")
PROMPT_COLUMNS = (
    "num_prefill_tokens",
    "prompt_len",
    "prompt_length",
    "prompt_tokens",
    "input_len",
    "input_length",
)
OUTPUT_COLUMNS = (
    "num_decode_tokens",
    "output_len",
    "output_length",
    "completion_tokens",
    "output_tokens_count",
)
SESSION_COLUMNS = ("session_id", "conversation_id")
GROUP_COLUMNS = ("prefix_group",)
PREFIX_LEN_COLUMNS = ("prefix_len", "prefix_length")
ADAPTER_COLUMNS = ("adapter",)
ADAPTER_RANK_COLUMNS = ("adapter_rank",)
NEVER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Columns:
    """Which field holds what (None: absent)."""

    time: str | None
    prompt: str
    output: str
    session: str | None
    group: str | None
    prefix_len: str | None
    adapter: str | None = None
    adapter_rank: str | None = None


def _pick(names: Mapping[str, str], wanted: tuple[str, ...]) -> str | None:
    for w in wanted:
        if w in names:
            return names[w]
    return None


def find_columns(fields: list[str], where: str, *, pairs: bool = True) -> Columns:
    """The columns of a length trace from its header (or first object's keys).

    ``pairs=False`` skips the checks that ``prefix_group``/``prefix_len`` and
    ``adapter_rank``/``adapter`` come together: JSON lines may name one on an earlier
    line than the other, so each row is checked instead (:meth:`_Rows.row`)."""
    names = {f.strip().lower(): f for f in fields}
    prompt = _pick(names, PROMPT_COLUMNS)
    output = _pick(names, OUTPUT_COLUMNS)
    if prompt is None or output is None:
        missing = "prompt" if prompt is None else "output"
        accepted = PROMPT_COLUMNS if prompt is None else OUTPUT_COLUMNS
        raise WorkloadError(
            f"{where}: no {missing}-length column (accepted: {', '.join(accepted)}; "
            f"found: {', '.join(f.strip() for f in fields)})"
        )
    group = _pick(names, GROUP_COLUMNS)
    plen = _pick(names, PREFIX_LEN_COLUMNS)
    if pairs and (group is None) != (plen is None):
        raise WorkloadError(f"{where}: prefix_group and prefix_len go together; one is missing")
    session = _pick(names, SESSION_COLUMNS)
    adapter = _pick(names, ADAPTER_COLUMNS)
    rank = _pick(names, ADAPTER_RANK_COLUMNS)
    if pairs and rank is not None and adapter is None:
        raise WorkloadError(f"{where}: adapter_rank needs an adapter column naming the adapter")
    return Columns(_pick(names, TIME_COLUMNS), prompt, output, session, group, plen, adapter, rank)


def looks_like_lengths(fields: list[str]) -> bool:
    """Whether a header (or JSON object's keys) names a prompt and an output length."""
    names = {f.strip().lower() for f in fields}
    return bool(names & set(PROMPT_COLUMNS)) and bool(names & set(OUTPUT_COLUMNS))


@dataclass(frozen=True, slots=True)
class LengthRow:
    line: int
    arrival: int | None  # µs after the first row; None without a time column
    prompt: int
    output: int
    session: str | None
    group: str | None
    prefix_len: int
    adapter: str = ""  # LoRA adapter ("": the base model)
    adapter_rank: int = 0  # 0: the adapter's catalog rank


def _plain(value: Any) -> Any:
    """numpy scalars (DataFrame cells) as Python values."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, str | bytes) else value


def _count(value: Any, name: str, where: str, lowest: int) -> int:
    value = _plain(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            raise WorkloadError(
                f"{where}: {name} holds a list; a length trace needs a token count "
                "(token-id lists: the reference's CSV, --trace-format csv)"
            )
        try:
            value = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise WorkloadError(f"{where}: {name} {text!r} is not an integer") from None
            if not as_float.is_integer():
                raise WorkloadError(f"{where}: {name} {text!r} is not an integer") from None
            value = int(as_float)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkloadError(f"{where}: {name} must be an integer, got {value!r}")
    if value < lowest:
        raise WorkloadError(f"{where}: {name} must be >= {lowest}, got {value}")
    check_length_bound(value, f"{where}: {name}")
    return value


def _time_us(value: Any, name: str, where: str) -> int:
    value = _plain(value)
    if hasattr(value, "timestamp") and callable(value.timestamp):  # datetime, pd.Timestamp
        return round(value.timestamp() * 1_000_000)
    if isinstance(value, bool):
        raise WorkloadError(f"{where}: {name} must be seconds or a UTC time, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise WorkloadError(f"{where}: {name} must be finite, got {value!r}")
        try:  # 1e303 s is infinitely many µs: an error, not an OverflowError
            return seconds_to_us(value, value)
        except ValueError as exc:
            raise WorkloadError(f"{where}: {name}: {exc}") from None
    try:
        return parse_timestamp_us(str(value))
    except ValueError as exc:
        if not str(exc).startswith("not a timestamp"):  # 25:15:50, February 30, 1e303
            raise WorkloadError(f"{where}: {name}: {exc}") from None
        raise WorkloadError(
            f"{where}: {name} must be seconds or a UTC time, got {str(value)[:40]!r}"
        ) from None


def _rank(value: Any, name: str, where: str) -> int:
    """An adapter_rank cell: a whole number >= 1 (empty: 0, the adapter's catalog rank)."""
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            value = 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"{where}: {name} must be a whole number >= 1, got {value!r}")
    return value


def _label(value: Any) -> str | None:
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None  # an empty DataFrame cell
    text = str(value).strip()
    return text or None


_ROLES = {
    "time": "arrival time",
    "prompt": "prompt length",
    "output": "output length",
    "session": "session",
    "group": "prefix group",
    "prefix_len": "prefix length",
    "adapter": "adapter",
    "adapter_rank": "adapter rank",
}


def _missing(value: Any) -> bool:
    """An absent key, a JSON null or an empty cell (a DataFrame's NaN included)."""
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and not value.strip()


class _Rows:
    """Turns raw field mappings into checked :class:`LengthRow` s, in order."""

    def __init__(self, cols: Columns, what: str, unit: str = "line") -> None:
        self.cols = cols
        self.what = what
        self.unit = unit
        self.first: int | None = None
        self.prev = -1
        self.fields: list[str] = []  # every key seen so far, in first-seen order
        self.known: set[str] = set()

    @classmethod
    def of_objects(cls, keys: list[str], what: str, line: int, unit: str = "line") -> _Rows:
        """Rows of JSON objects (or in-memory records), starting with the first one's keys."""
        rows = cls(find_columns(keys, f"{what} {unit} {line}", pairs=False), what, unit)
        rows.fields = list(dict.fromkeys(keys))
        rows.known = set(keys)
        return rows

    def widen(self, keys: list[str], line: int) -> None:
        """Take in keys first seen on ``line``: a JSON writer leaves out null keys, so an
        ``adapter`` or ``session_id`` may first appear on a later line. Earlier lines read
        it as empty; an arrival time that appears late, or a second name for a column
        already in use, is an error (it would change what earlier lines meant)."""
        new = [k for k in keys if k not in self.known]
        if not new:
            return
        where = f"{self.what} {self.unit} {line}"
        self.known.update(new)
        self.fields.extend(dict.fromkeys(new))
        cols = find_columns(self.fields, where, pairs=False)
        for role, text in _ROLES.items():
            was, now = getattr(self.cols, role), getattr(cols, role)
            if was is not None and now != was:
                raise WorkloadError(
                    f"{where}: key {now!r} and key {was!r} (earlier lines) both name the "
                    f"{text}; use one name on every line"
                )
            if role == "time" and was is None and now is not None:
                raise WorkloadError(
                    f"{where}: key {now!r} gives an arrival time, but the earlier lines have "
                    "none; give every line a time, or none (then --rate spaces them)"
                )
        self.cols = cols

    def row(self, fields: Mapping[str, Any], line: int) -> LengthRow:
        c = self.cols
        where = f"{self.what} {self.unit} {line}"
        arrival = None
        if c.time is not None:
            if _missing(fields.get(c.time)):
                raise WorkloadError(
                    f"{where}: no {c.time}; when one row has an arrival time, every row needs one"
                )
            stamp = _time_us(fields.get(c.time), c.time, where)
            if self.first is None:
                self.first = stamp
            arrival = stamp - self.first
            if arrival < self.prev:
                raise WorkloadError(f"{where}: {c.time} goes back in time; sort the rows by time")
            if arrival > MAX_ARRIVAL_US:
                raise WorkloadError(
                    f"{where}: {c.time} is {arrival / 1e6:g} s after the first row; at most "
                    f"{MAX_ARRIVAL_US / 1e6:g} s"
                )
            self.prev = arrival
        for name, names in ((c.prompt, PROMPT_COLUMNS), (c.output, OUTPUT_COLUMNS)):
            if fields.get(name) is None:  # a JSON line without the key, or null
                other = [str(k) for k in fields if str(k).strip().lower() in names]
                hint = f" (it names {other[0]!r}: use one name on every line)" if other else ""
                raise WorkloadError(
                    f"{where}: no {name}{hint}; every row needs a prompt and an output length"
                )
        prompt = _count(fields.get(c.prompt), c.prompt, where, 1)
        output = _count(fields.get(c.output), c.output, where, 0)
        group = _label(fields.get(c.group)) if c.group else None
        plen = 0
        if group is not None:
            if c.prefix_len is None or fields.get(c.prefix_len) is None:
                raise WorkloadError(
                    f"{where}: prefix_group {group!r} needs a prefix length "
                    f"({' or '.join(PREFIX_LEN_COLUMNS)})"
                )
            plen = _count(fields.get(c.prefix_len), c.prefix_len, where, 0)
            if plen > prompt:
                raise WorkloadError(
                    f"{where}: {c.prefix_len} {plen} is longer than the prompt ({prompt} tokens)"
                )
        session = _label(fields.get(c.session)) if c.session else None
        adapter = (_label(fields.get(c.adapter)) if c.adapter else None) or ""
        rank = 0
        if c.adapter_rank is not None and _label(fields.get(c.adapter_rank)) is not None:
            rank = _rank(fields.get(c.adapter_rank), c.adapter_rank, where)
            if not adapter:
                raise WorkloadError(
                    f"{where}: {c.adapter_rank} needs an adapter name in the "
                    f"{c.adapter or ADAPTER_COLUMNS[0]} column"
                )
        return LengthRow(line, arrival, prompt, output, session, group, plen, adapter, rank)


def _open(path: str):
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise WorkloadError(f"length trace {path}: file not found") from None
    except OSError as exc:
        raise WorkloadError(f"length trace {path}: cannot read: {exc.strerror or exc}") from None


def _is_jsonl(path: str) -> bool:
    with _open(path) as fh:
        for text in fh:
            if text.strip():
                return text.lstrip("\ufeff").lstrip().startswith("{")
    raise WorkloadError(f"length trace {path}: file is empty")


def trace_columns(path: str | os.PathLike[str]) -> Columns:
    """The columns of a length trace (reads the header or the first JSON object only)."""
    p = os.fspath(path)
    return next(_scan(p, header_only=True))  # type: ignore[return-value]


def iter_length_rows(path: str | os.PathLike[str]) -> Iterator[LengthRow]:
    """Checked rows of a length trace, in file order (streamed)."""
    p = os.fspath(path)
    return _scan(p, header_only=False)  # type: ignore[return-value]


def _scan(p: str, header_only: bool) -> Iterator[Columns | LengthRow]:
    what = f"length trace {p}"
    if _is_jsonl(p):
        with _open(p) as fh:
            rows: _Rows | None = None
            line = 0
            try:
                for line, text in bounded_lines(fh):
                    if not text.strip():
                        continue
                    where = f"{what} line {line}"
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise WorkloadError(f"{where}: invalid JSON ({exc.msg})") from None
                    except RecursionError:
                        raise WorkloadError(f"{where}: invalid JSON (nested too deeply)") from None
                    if not isinstance(obj, dict):
                        raise WorkloadError(f"{where}: expected a JSON object")
                    if rows is None:
                        rows = _Rows.of_objects(list(obj), what, line)
                        if header_only:
                            yield rows.cols
                            return
                    elif not rows.known.issuperset(obj):
                        rows.widen(list(obj), line)
                    yield rows.row(obj, line)
            except RowTooLong as exc:
                raise WorkloadError(f"{what} line {exc.line}: {exc}") from None
            except UnicodeDecodeError:
                raise WorkloadError(f"{what} line {line + 1}: not UTF-8 text") from None
        return
    with _open(p) as fh:
        reader = BoundedCsvReader(fh)
        line = 1
        try:
            header = next(reader, None)
            if header is None:
                raise WorkloadError(f"{what}: file is empty, expected a header row")
            cols = find_columns(header, f"{what} line 1")
            used = {c.strip().lower() for c in astuple(cols) if c}
            keys = [name.strip().lower() for name in header]
            for key in sorted({k for k in keys if k in used and keys.count(k) > 1}):
                raise WorkloadError(
                    f"{what} line 1: column {key!r} appears twice in the header; which one "
                    "holds the data is ambiguous"
                )
            if header_only:
                yield cols
                return
            rows = _Rows(cols, what)
            line = reader.line_num + 1
            seen = 0
            for cells in reader:
                if not cells:
                    line = reader.line_num + 1
                    continue
                seen += 1
                if len(cells) != len(header):
                    raise WorkloadError(
                        f"{what} line {line}: row has {len(cells)} fields, "
                        f"the header has {len(header)}"
                    )
                yield rows.row(dict(zip(header, cells, strict=True)), line)
                line = reader.line_num + 1
            if not seen:
                raise WorkloadError(f"{what}: no requests (only a header)")
        except RowTooLong as exc:
            raise WorkloadError(f"{what} line {line}: {exc}") from None
        except csv.Error as exc:
            raise WorkloadError(f"{what} line {line}: malformed CSV: {exc}") from None
        except UnicodeDecodeError:
            raise WorkloadError(f"{what}: not UTF-8 text") from None


def iter_length_records(
    records: Iterable[Mapping[str, Any]],
    *,
    streams: RandomStreams | None = None,
    seed: int = 0,
    horizon: int = NEVER,
    arrival_times: Iterator[int] | None = None,
    what: str = "trace",
) -> Iterator[Request]:
    """Replay in-memory rows (a DataFrame's records, a list of dicts) as a length trace.

    Same column names and rules as a file (``line`` in errors is the row number, from 1);
    a results file's ``requests`` (``arrived_at``, ``num_prefill_tokens``,
    ``num_decode_tokens``) replays as it is.
    """
    streams = streams or RandomStreams(seed)
    base = int(streams.generator("trace-replay").integers(0, 2**63 - 1))
    return _replay(_record_rows(iter(records), what), base, horizon, arrival_times)


def _record_rows(records: Iterator[Mapping[str, Any]], what: str) -> Iterator[LengthRow]:
    """Checked rows of in-memory records; columns are the keys of every record, as for
    JSON lines (a list of dicts built from JSON drops keys too)."""
    rows: _Rows | None = None
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, Mapping):
            raise WorkloadError(f"{what} row {i}: expected a mapping of columns")
        keys = [str(k) for k in rec]
        if rows is None:
            rows = _Rows.of_objects(keys, what, i, "row")
        elif not rows.known.issuperset(keys):
            rows.widen(keys, i)
        yield rows.row(rec, i)


def iter_length_trace(
    path: str | os.PathLike[str],
    *,
    streams: RandomStreams | None = None,
    seed: int = 0,
    horizon: int = NEVER,
    arrival_times: Iterator[int] | None = None,
) -> Iterator[Request]:
    """Replay a length trace with synthetic token ids (see the module doc).

    ``arrival_times`` supplies arrivals for a trace without a time column (``blis run``
    passes the ``--rate``/``--arrival`` stream); without either, requests arrive 0 µs
    apart. Reading stops at the first arrival later than ``horizon`` (one exactly at it is
    replayed, as the reference's CSV reader and the simulator do).
    """
    streams = streams or RandomStreams(seed)
    base = int(streams.generator("trace-replay").integers(0, 2**63 - 1))
    return _replay(iter_length_rows(path), base, horizon, arrival_times)


def _replay(
    rows: Iterator[LengthRow], base: int, horizon: int, times: Iterator[int] | None
) -> Iterator[Request]:
    history: dict[str, list[Segment]] = {}
    with gc_paused():
        for i, row in enumerate(rows):
            if row.arrival is not None:
                arrival = row.arrival
            elif times is not None:
                arrival = next(times, None)
                if arrival is None:  # the arrival stream is exhausted (its horizon)
                    return
            else:
                arrival = 0
            if arrival > horizon:  # the reference CSV's rule: a row at the horizon runs
                return
            segs: list[Segment] = []
            if row.session is not None:
                segs = take(history.get(row.session, []), row.prompt)
            shared = sum(n for _, _, n in segs)
            if row.group is not None and not segs:
                segs = [(stable_key(base, "group", row.group), 0, row.prefix_len)]
                shared = row.prefix_len
            fresh = row.prompt - shared
            if fresh:
                segs.append((stable_key(base, "in", i), 0, fresh))
            out_seg = (stable_key(base, "out", i), 0, row.output)
            if row.session is not None:
                history[row.session] = [*segs, out_seg]
            prompt = materialize(segs)
            output = materialize([out_seg]) if row.output else np.zeros(0, dtype=np.int32)
            # --export-trace writes the ids themselves, so a trace v2 replay is exact.
            meta: dict[str, object] = {"token_ids": "explicit"}
            if row.session is not None:
                meta["session_id"] = row.session
            if row.group is not None:
                meta["prefix_group"] = row.group
                meta["prefix_length"] = row.prefix_len
            # Tokens past the shared part appear in no other prompt unless sessions
            # carry them on (then any token may be resent).
            private = -1 if row.session is not None else shared
            yield Request(
                i,
                arrival,
                prompt,
                output,
                metadata=meta,
                private_from=private,
                adapter=row.adapter,
                adapter_rank=row.adapter_rank,
            )
