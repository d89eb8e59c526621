"""Trace v2: a YAML header plus a CSV of one row per request (export, load and replay).

Files: ``NAME.csv`` holds the rows and ``NAME.yaml`` the header (given either path, the
other is found by swapping the suffix; the header is optional when loading). The CSV has
the reference's 22 columns in its order, then three of ours that make a replay exact:

* ``model`` — the request's model label;
* ``prefix_length`` — leading prompt tokens shared with every request of ``prefix_group``;
* ``context_tokens`` — leading prompt tokens equal to the previous request of the same
  ``session_id`` (its prompt followed by its output): a multi-turn conversation.

``input_tokens`` is the whole prompt as the server sees it (prefix and context included).
A file with only the 22 reference columns loads too: a named ``prefix_group`` then shares
a 50-token prefix *within* ``input_tokens`` (the reference adds 50 more tokens on top).

Four more optional columns carry prompts whose sharing groups and sessions cannot express
(written empty otherwise; ids are space-separated decimal integers):

* ``hash_block_size``, ``hash_ids`` — a Mooncake replay: the prompt is the blocks of
  ``hash_block_size`` tokens named by ``hash_ids``, synthesised exactly as the Mooncake
  reader does (:mod:`inference_sim.workload.realtraces`);
* ``input_token_ids``, ``output_token_ids`` — a reference CSV replay: the token ids
  themselves.

Columns this reader does not know are ignored, so other tools' extra columns load.

Replay synthesises token ids (:mod:`inference_sim.workload.tokens`) from the run seed, so
the same trace and seed give the same ids, and the sharing structure (groups, sessions,
hash blocks) is reproduced exactly: a generated workload or a Mooncake or CSV trace
replay, exported and replayed, gives identical per-request results. Rows must be in
arrival order (exports are); requests keep their ``request_id`` as index, so ids must be
unique.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import yaml

from inference_sim.core.outfiles import OutputFile, write_text
from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.core.suggest import did_you_mean
from inference_sim.workload._gc import gc_paused
from inference_sim.workload._rows import BoundedCsvReader, RowTooLong
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.samplers import MAX_REQUEST_TOKENS, check_length_bound
from inference_sim.workload.spec import DEFAULT_PREFIX_LENGTH, read_yaml
from inference_sim.workload.tokens import (
    Segment,
    block_keys,
    block_tokens,
    materialize,
    stable_key,
    take,
)

COLUMNS = (
    "request_id",
    "client_id",
    "tenant_id",
    "slo_class",
    "session_id",
    "round_index",
    "prefix_group",
    "streaming",
    "input_tokens",
    "output_tokens",
    "text_tokens",
    "image_tokens",
    "audio_tokens",
    "video_tokens",
    "reason_ratio",
    "arrival_time_us",
    "send_time_us",
    "first_chunk_time_us",
    "last_chunk_time_us",
    "num_chunks",
    "status",
    "error_message",
)
EXTRA_COLUMNS = ("model", "prefix_length", "context_tokens")
TOKEN_COLUMNS = ("hash_block_size", "hash_ids", "input_token_ids", "output_token_ids")
"""Optional columns (after EXTRA_COLUMNS) for prompts groups and sessions cannot express."""
LORA_COLUMNS = ("adapter", "adapter_rank")
"""Optional columns: the request's LoRA adapter ("" = base model) and its rank (docs/lora.md)."""
STATUSES = ("ok", "error", "timeout")
TIME_UNITS = ("microseconds", "us", "µs")
_HEADER_KEYS = (
    "trace_version",
    "time_unit",
    "created_at",
    "mode",
    "warm_up_requests",
    "workload_spec",
    "server",
    "network",
)
_SERVER_KEYS = (
    "type",
    "model",
    "tensor_parallel",
    "max_num_seqs",
    "block_size",
    "gpu_memory_utilization",
    "max_model_len",
)
_INT_COLUMNS = (
    "request_id",
    "round_index",
    "input_tokens",
    "output_tokens",
    "text_tokens",
    "image_tokens",
    "audio_tokens",
    "video_tokens",
    "arrival_time_us",
    "send_time_us",
    "first_chunk_time_us",
    "last_chunk_time_us",
    "num_chunks",
)
_META_INTS = ("text_tokens", "image_tokens", "audio_tokens", "video_tokens")
_NON_NEGATIVE = (
    "output_tokens",
    "round_index",
    *_META_INTS,
    "arrival_time_us",
    "send_time_us",
    "first_chunk_time_us",
    "last_chunk_time_us",
    "num_chunks",
)
"""Integer columns that must be >= 0 (counts and timestamps)."""
_COMPARED_SERVER_KEYS = tuple(k for k in _SERVER_KEYS if k != "type")
"""Header ``server`` keys compared with the run's settings (``type`` names the recorder)."""
log = logging.getLogger("inference_sim")
NEVER = 2**63 - 1
_MAX_TOKEN_ID = 2**31 - 1  # token ids are stored as int32
_INT64 = (-(2**63), 2**63 - 1)  # hash ids, as the Mooncake reader takes them
MAX_HEADER_BYTES = 2**20
"""Largest trace v2 header (YAML) read: a real one is a few hundred bytes, and YAML is
parsed whole, so a huge file is refused before it is read."""


@dataclass
class TraceV2Header:
    trace_version: int = 2
    time_unit: str = "microseconds"
    created_at: str = ""
    mode: str = "generated"
    warm_up_requests: int = 0
    workload_spec: str = ""
    server: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {
            "trace_version": self.trace_version,
            "time_unit": self.time_unit,
        }
        if self.created_at:
            doc["created_at"] = self.created_at
        doc["mode"] = self.mode
        doc["warm_up_requests"] = self.warm_up_requests
        if self.workload_spec:
            doc["workload_spec"] = self.workload_spec
        server = {k: self.server[k] for k in _SERVER_KEYS if self.server.get(k)}
        if server:
            doc["server"] = server
        if self.network.get("measured_rtt_ms"):
            doc["network"] = {"measured_rtt_ms": self.network["measured_rtt_ms"]}
        return yaml.safe_dump(doc, sort_keys=False)


def trace_v2_paths(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(header path, data path) for either file of a trace v2 pair."""
    p = os.fspath(path)
    stem, ext = os.path.splitext(p)
    if ext.lower() in (".yaml", ".yml"):
        return p, stem + ".csv"
    if ext.lower() == ".csv":
        for suffix in (".yaml", ".yml"):
            if os.path.exists(stem + suffix):
                return stem + suffix, p
        return stem + ".yaml", p
    return p + ".yaml", p


# --- export -------------------------------------------------------------------------------


def _ratio_text(x: float) -> str:
    if x == int(x):
        return str(int(x))
    return repr(float(x))


def _ids_text(ids: Iterable[int]) -> str:
    return " ".join(map(str, ids))


def _token_cells(req: Request, meta: Mapping[str, Any]) -> list[str]:
    """The TOKEN_COLUMNS cells: explicit ids (reference CSV), or hash blocks (Mooncake)."""
    if meta.get("token_ids") == "explicit":
        return ["", "", _ids_text(req.input_tokens.tolist()), _ids_text(req.output_tokens.tolist())]
    hash_ids = meta.get("hash_ids")
    if hash_ids:
        return [str(int(meta["hash_block_size"])), _ids_text(hash_ids), "", ""]
    return ["", "", "", ""]


def _whole_prompt_given(meta: Mapping[str, Any]) -> bool:
    """Whether the row's token columns give the whole prompt (explicit ids or hash ids):
    then ``prefix_length`` and ``context_tokens`` are written 0, as the reader requires --
    the ids already hold any shared prefix or session context (a length trace's
    prefix_group rows are exported with their ids)."""
    return meta.get("token_ids") == "explicit" or bool(meta.get("hash_ids"))


def trace_row(req: Request) -> list[str]:
    """The CSV row of one request (the 22 reference columns, then ours)."""
    meta: Mapping[str, Any] = req.metadata or {}
    whole = _whole_prompt_given(meta)
    return [
        str(req.index),
        str(meta.get("client_id", "")),
        req.tenant_id,
        req.slo_class,
        str(meta.get("session_id", "")),
        str(int(meta.get("round_index", 0))),
        str(meta.get("prefix_group", "")),
        "true" if meta.get("streaming") else "false",
        str(req.num_prompt_tokens),
        str(req.num_output_tokens),
        str(int(meta.get("text_tokens", 0))),
        str(int(meta.get("image_tokens", 0))),
        str(int(meta.get("audio_tokens", 0))),
        str(int(meta.get("video_tokens", 0))),
        _ratio_text(float(meta.get("reason_ratio", 0.0))),
        str(req.arrival_time),
        str(req.arrival_time),
        "0",
        "0",
        "0",
        "ok",
        "",
        req.model,
        "0" if whole else str(int(meta.get("prefix_length", 0))),
        "0" if whole else str(int(meta.get("context_tokens", 0))),
        *_token_cells(req, meta),
        req.adapter,
        str(req.adapter_rank) if req.adapter_rank else "",
    ]


class TraceV2Writer:
    """Writes a trace v2 pair: rows go to a temporary file until :meth:`close` (a device
    or FIFO is written through instead; :mod:`inference_sim.core.outfiles`)."""

    def __init__(self, path: str | os.PathLike[str], header: TraceV2Header | None = None) -> None:
        self.header_path, self.data_path = trace_v2_paths(path)
        self.header = header or TraceV2Header()
        self.count = 0
        #: A comment line heading the header file (a partial export says so there).
        self.note = ""
        try:
            self._out: OutputFile | None = OutputFile(self.data_path, newline="")
        except OSError as exc:
            raise WorkloadError(
                f"--export-trace {self.data_path}: cannot write: {exc.strerror or exc}"
            ) from None
        self._writer = csv.writer(self._out.fh, lineterminator="\n")
        self._writer.writerow((*COLUMNS, *EXTRA_COLUMNS, *TOKEN_COLUMNS, *LORA_COLUMNS))

    def write(self, req: Request) -> None:
        self._writer.writerow(trace_row(req))
        self.count += 1

    def close(self) -> None:
        """Finish both files (header last), replacing any previous pair."""
        if self._out is None:
            return
        out, self._out = self._out, None
        try:
            out.commit()  # removes its temporary file itself if this fails
            note = f"# {' '.join(self.note.split())}\n" if self.note else ""
            write_text(self.header_path, note + self.header.to_yaml())
        except OSError as exc:
            raise WorkloadError(
                f"--export-trace {self.data_path}: cannot write: {exc.strerror or exc}"
            ) from None

    def abort(self) -> None:
        """Drop the temporary file (nothing is left behind)."""
        if self._out is not None:
            self._out.abort()
            self._out = None

    def tee(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Pass ``requests`` through, writing each one as it goes by."""
        write = self.write
        for req in requests:
            write(req)
            yield req


def export_trace_v2(
    requests: Iterable[Request],
    path: str | os.PathLike[str],
    header: TraceV2Header | None = None,
) -> int:
    """Write ``requests`` as a trace v2 pair; returns the number of rows."""
    writer = TraceV2Writer(path, header)
    try:
        for req in requests:
            writer.write(req)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.count


# --- load ---------------------------------------------------------------------------------


def read_trace_v2_header(path: str | os.PathLike[str]) -> TraceV2Header:
    """Parse a header file strictly (unknown keys are errors)."""
    p = os.fspath(path)
    with contextlib.suppress(OSError):  # unreadable: read_yaml says so
        if os.path.getsize(p) > MAX_HEADER_BYTES:
            raise WorkloadError(
                f"trace header {p}: larger than {MAX_HEADER_BYTES:,} bytes; a trace v2 "
                "header is a short YAML mapping (trace_version, time_unit, ...)"
            )
    data = read_yaml(p, "trace header")
    where = f"trace header {p}"
    if not isinstance(data, dict):
        raise WorkloadError(f"{where}: expected a mapping with trace_version")
    for key in data:
        if key not in _HEADER_KEYS:
            raise WorkloadError(
                f'{where}: unknown field "{key}"{did_you_mean(key, _HEADER_KEYS)}; '
                f"valid: {', '.join(_HEADER_KEYS)}"
            )
    h = TraceV2Header()
    version = data.get("trace_version")
    if version is None:
        raise WorkloadError(f"{where}: trace_version is required")
    if isinstance(version, bool) or not isinstance(version, int) or version != 2:
        raise WorkloadError(f"{where}: trace_version must be 2, got {version!r}")
    unit = str(data.get("time_unit") or "microseconds")
    if unit not in TIME_UNITS:
        raise WorkloadError(f'{where}: time_unit must be "microseconds", got {unit!r}')
    mode = str(data.get("mode") or "generated")
    if mode not in ("real", "generated"):
        raise WorkloadError(f'{where}: mode must be "real" or "generated", got {mode!r}')
    warm = data.get("warm_up_requests") or 0
    if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
        raise WorkloadError(f"{where}: warm_up_requests must be an integer >= 0, got {warm!r}")
    server = data.get("server") or {}
    if not isinstance(server, dict):
        raise WorkloadError(f"{where}: server must be a mapping")
    for key in server:
        if key not in _SERVER_KEYS:
            raise WorkloadError(
                f'{where}: server: unknown field "{key}"{did_you_mean(key, _SERVER_KEYS)}; '
                f"valid: {', '.join(_SERVER_KEYS)}"
            )
    network = data.get("network") or {}
    if not isinstance(network, dict) or not set(network) <= {"measured_rtt_ms"}:
        raise WorkloadError(f"{where}: network may only hold measured_rtt_ms")
    h.trace_version = version
    h.time_unit = unit
    h.created_at = str(data.get("created_at") or "")
    h.mode = mode
    h.warm_up_requests = warm
    h.workload_spec = str(data.get("workload_spec") or "")
    h.server = dict(server)
    h.network = dict(network)
    return h


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One parsed trace v2 row (``line`` is its 1-based line in the CSV)."""

    line: int
    values: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _parse_int(text: str, column: str, where: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise WorkloadError(f'{where}: parsing {column} "{text}": not an integer') from None


def _parse_ids(
    text: str, column: str, where: str, lo: int, hi: int, expected: tuple[int, str]
) -> list[int] | None:
    """Space-separated decimal integers in [lo, hi]; None for an empty cell.

    ``expected``: how many ids the row's lengths make, and why. A cell of far more ids
    (millions, say) is refused without splitting it whole; one id more is left to
    :func:`_check_tokens`, which reports the exact count.
    """
    most = min(max(expected[0], 1), MAX_REQUEST_TOKENS) + 1
    parts = text.split(maxsplit=most)
    if not parts:
        return None
    if len(parts) > most:
        raise WorkloadError(f"{where}: {column} has more than {most} ids, {expected[1]}")
    try:
        if "_" in text:
            raise ValueError
        ids = [int(x) for x in parts]
    except ValueError:
        bad = next((x for x in parts if "_" in x or not x.lstrip("-").isdecimal()), parts[0])
        raise WorkloadError(
            f'{where}: parsing {column}: "{bad[:40]}" is not an integer '
            "(ids are space-separated integers)"
        ) from None
    low, high = min(ids), max(ids)
    if low < lo or high > hi:
        raise WorkloadError(
            f"{where}: {column} must lie in [{lo}, {hi}], got {low if low < lo else high}"
        )
    return ids


def iter_trace_v2_records(data_path: str | os.PathLike[str]) -> Iterator[TraceRecord]:
    """Rows of a trace v2 CSV, checked column by column."""
    p = os.fspath(data_path)
    try:
        fh = open(p, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise WorkloadError(f"trace {p}: file not found") from None
    except OSError as exc:
        raise WorkloadError(f"trace {p}: cannot read: {exc.strerror or exc}") from None
    return _records(fh, p)


def _records(fh: TextIO, p: str) -> Iterator[TraceRecord]:
    with fh:
        reader = BoundedCsvReader(fh)
        line = 1
        try:
            header = next(reader, None)
            if header is None:
                raise WorkloadError(f"trace {p}: file is empty, expected a header row")
            names = [h.strip() for h in header]
            if tuple(names[: len(COLUMNS)]) != COLUMNS:
                missing = [c for c in COLUMNS if c not in names]
                detail = (
                    f"missing columns: {', '.join(missing)}" if missing else "columns out of order"
                )
                raise WorkloadError(
                    f"trace {p} line 1: not a trace v2 header ({detail}); expected "
                    f"{','.join(COLUMNS)}"
                )
            extra = {
                name: i
                for i, name in enumerate(names)
                if name in EXTRA_COLUMNS or name in TOKEN_COLUMNS or name in LORA_COLUMNS
            }
            line = reader.line_num + 1
            rows = 0
            for row in reader:
                if not row:
                    line = reader.line_num + 1
                    continue
                rows += 1
                where = f"trace {p} line {line}"
                if len(row) < len(COLUMNS):
                    raise WorkloadError(
                        f"{where}: CSV row has {len(row)} columns, expected {len(COLUMNS)}"
                    )
                if len(row) != len(names):
                    raise WorkloadError(
                        f"{where}: CSV row has {len(row)} columns, the header has {len(names)}"
                    )
                values: dict[str, Any] = dict(zip(COLUMNS, row, strict=False))
                for column in _INT_COLUMNS:
                    values[column] = _parse_int(values[column], column, where)
                streaming = values["streaming"].strip().lower()
                if streaming not in ("true", "false", "1", "0", ""):
                    raise WorkloadError(f'{where}: parsing streaming "{values["streaming"]}"')
                values["streaming"] = streaming in ("true", "1")
                try:
                    ratio = float(values["reason_ratio"] or 0)
                except ValueError:
                    raise WorkloadError(
                        f'{where}: parsing reason_ratio "{values["reason_ratio"]}"'
                    ) from None
                if not math.isfinite(ratio):
                    raise WorkloadError(f"{where}: reason_ratio must be finite")
                values["reason_ratio"] = ratio
                status = values["status"].strip() or "ok"
                if status not in STATUSES:
                    raise WorkloadError(
                        f'{where}: status must be one of {", ".join(STATUSES)}, got "{status}"'
                    )
                values["status"] = status
                values["error_message"] = values["error_message"].strip()
                values["model"] = row[extra["model"]] if "model" in extra else ""
                for column in ("prefix_length", "context_tokens"):
                    if column in extra:
                        values[column] = _parse_int(row[extra[column]] or "0", column, where)
                    else:
                        values[column] = None
                _token_values(values, row, extra, where)
                _lora_values(values, row, extra, where)
                _check_record(values, where)
                yield TraceRecord(line, values)
                line = reader.line_num + 1
            if not rows:
                # As the reference CSV (workload/traces.py): a run of nothing, said in the
                # log. An export of a run that injected no request before its horizon is
                # such a file, and a replay of it must repeat that run, not refuse it.
                log.warning("trace %s: no requests (only a header)", p)
        except RowTooLong as exc:
            raise WorkloadError(f"trace {p} line {line}: {exc}") from None
        except csv.Error as exc:
            raise WorkloadError(f"trace {p} line {line}: malformed CSV: {exc}") from None
        except UnicodeDecodeError:
            raise WorkloadError(f"trace {p}: not UTF-8 text") from None


def _lora_values(
    values: dict[str, Any], row: list[str], extra: Mapping[str, int], where: str
) -> None:
    """Parse the optional LORA_COLUMNS (absent or empty: no adapter, rank 0)."""
    values["adapter"] = row[extra["adapter"]].strip() if "adapter" in extra else ""
    rank = row[extra["adapter_rank"]].strip() if "adapter_rank" in extra else ""
    values["adapter_rank"] = _parse_int(rank, "adapter_rank", where) if rank else 0
    if values["adapter_rank"] < 0:
        raise WorkloadError(f"{where}: adapter_rank must be >= 1, got {values['adapter_rank']}")
    if values["adapter_rank"] and not values["adapter"]:
        raise WorkloadError(f"{where}: adapter_rank needs an adapter name in the adapter column")


def _token_values(
    values: dict[str, Any], row: list[str], extra: Mapping[str, int], where: str
) -> None:
    """Parse the optional TOKEN_COLUMNS (absent or empty: None, hash_block_size 0)."""

    def cell(name: str) -> str:
        return row[extra[name]] if name in extra else ""

    size = cell("hash_block_size").strip()
    values["hash_block_size"] = block = _parse_int(size, "hash_block_size", where) if size else 0
    n_in, n_out = values["input_tokens"], values["output_tokens"]
    if block > 0:
        blocks = (-(-n_in // block), f"input_tokens {n_in} makes {-(-n_in // block)} blocks")
    else:
        blocks = (n_in, f"input_tokens is {n_in}")
    values["hash_ids"] = _parse_ids(cell("hash_ids"), "hash_ids", where, *_INT64, blocks)
    for column, name, n in (
        ("input_token_ids", "input_tokens", n_in),
        ("output_token_ids", "output_tokens", n_out),
    ):
        expected = (n, f"{name} is {n}")
        values[column] = _parse_ids(cell(column), column, where, 0, _MAX_TOKEN_ID, expected)


def _check_tokens(v: dict[str, Any], where: str) -> None:
    ids = v["hash_ids"]
    size = v["hash_block_size"]
    explicit = v["input_token_ids"]
    if size < 0:
        raise WorkloadError(f"{where}: hash_block_size must be >= 0, got {size}")
    if (ids is None) != (size == 0):
        raise WorkloadError(f"{where}: hash_ids and hash_block_size > 0 go together")
    if ids is not None:
        need = -(-v["input_tokens"] // size)
        if len(ids) != need:
            raise WorkloadError(
                f"{where}: {len(ids)} hash_ids, but input_tokens {v['input_tokens']} makes "
                f"{need} blocks of {size} tokens"
            )
    if explicit is not None and len(explicit) != v["input_tokens"]:
        raise WorkloadError(
            f"{where}: input_token_ids has {len(explicit)} ids, input_tokens is {v['input_tokens']}"
        )
    out = v["output_token_ids"]
    if out is not None and len(out) != v["output_tokens"]:
        raise WorkloadError(
            f"{where}: output_token_ids has {len(out)} ids, output_tokens is {v['output_tokens']}"
        )
    given = [name for name in ("hash_ids", "input_token_ids") if v[name] is not None]
    if given and (v["prefix_length"] or v["context_tokens"]):
        raise WorkloadError(
            f"{where}: {given[0]} gives the whole prompt; prefix_length and context_tokens "
            "must then be 0"
        )
    if len(given) > 1:
        raise WorkloadError(f"{where}: give either hash_ids or input_token_ids, not both")


def _check_record(v: dict[str, Any], where: str) -> None:
    if v["request_id"] < 0:
        raise WorkloadError(f"{where}: request_id must be >= 0, got {v['request_id']}")
    # 0 is allowed: a degenerate gaussian (min = max = 0) generates empty prompts, as
    # the reference does (workload spec 6.1), and an export must replay as generated.
    if v["input_tokens"] < 0:
        raise WorkloadError(f"{where}: input_tokens must be >= 0, got {v['input_tokens']}")
    for column in _NON_NEGATIVE:
        if v[column] < 0:
            raise WorkloadError(f"{where}: {column} must be >= 0, got {v[column]}")
    # slo_class is a label (per-class metrics group by it; no policy reads it), so a
    # trace recorded elsewhere may carry its own classes, as the reference accepts.
    v["slo_class"] = v["slo_class"].strip()
    for column in ("input_tokens", "output_tokens"):
        check_length_bound(v[column], f"{where}: {column}")
    for column in ("prefix_length", "context_tokens"):
        n = v[column]
        if n is not None and not 0 <= n <= v["input_tokens"]:
            raise WorkloadError(
                f"{where}: {column} must be in [0, input_tokens={v['input_tokens']}], got {n}"
            )
    if v["context_tokens"] and not v["session_id"]:
        raise WorkloadError(f"{where}: context_tokens > 0 needs a session_id")
    _check_tokens(v, where)


def load_trace_v2(
    path: str | os.PathLike[str],
) -> tuple[TraceV2Header | None, Iterator[TraceRecord]]:
    """The header (None if absent) and the row iterator of a trace v2 pair."""
    header_path, data_path = trace_v2_paths(path)
    header = read_trace_v2_header(header_path) if os.path.exists(header_path) else None
    if os.fspath(path) == header_path and not os.path.exists(data_path):
        raise WorkloadError(f"trace {header_path}: data file {data_path} not found")
    return header, iter_trace_v2_records(data_path)


# --- replay -------------------------------------------------------------------------------


_Part = Segment | np.ndarray  # synthetic ids (key, start, length), or explicit ids


def _parts_length(parts: Iterable[_Part]) -> int:
    return sum(len(p) if isinstance(p, np.ndarray) else p[2] for p in parts)


def _take_parts(parts: Iterable[_Part], n: int) -> list[_Part]:
    """The parts of the first ``n`` tokens of ``parts``."""
    out: list[_Part] = []
    left = n
    for p in parts:
        if left <= 0:
            break
        if isinstance(p, np.ndarray):
            out.append(p[:left])
            left -= min(len(p), left)
        else:
            out.extend(take([p], left))
            left -= min(p[2], left)
    return out


def _materialize_parts(parts: list[_Part]) -> np.ndarray:
    if all(not isinstance(p, np.ndarray) for p in parts):
        return materialize(parts)  # type: ignore[arg-type]
    return np.concatenate(
        [p if isinstance(p, np.ndarray) else materialize([p]) for p in parts]
    ).astype(np.int32, copy=False)


def replay_trace_v2(
    records: Iterable[TraceRecord],
    *,
    streams: RandomStreams,
    source: str = "trace",
    horizon: int = NEVER,
) -> Iterator[Request]:
    """Requests from trace records, with synthetic ids that keep the sharing structure.

    Stops at the first row arriving later than ``horizon`` (a row exactly at it is
    replayed, the reference CSV's rule; rows are sorted, so no later row is earlier)."""
    base = int(streams.generator("trace-replay").integers(0, 2**63 - 1))
    block_base = stable_key(base, "hash-block")  # as the Mooncake reader's
    group_keys: dict[str, int] = {}
    sessions: dict[str, list[_Part]] = {}
    seen_ids: set[int] = set()
    last_arrival = -1
    with gc_paused():
        for rec in records:
            v = rec.values
            where = f"{source} line {rec.line}"
            rid = v["request_id"]
            if rid in seen_ids:
                raise WorkloadError(f"{where}: request_id {rid} appears twice")
            seen_ids.add(rid)
            arrival = v["arrival_time_us"]
            if arrival < last_arrival:
                raise WorkloadError(
                    f"{where}: arrival_time_us {arrival} is earlier than the previous row's "
                    f"{last_arrival}; rows must be sorted by arrival time"
                )
            if arrival > horizon:
                return
            last_arrival = arrival
            n_in = v["input_tokens"]
            group = v["prefix_group"]
            plen = v["prefix_length"]
            if plen is None:  # a reference file: a 50-token group prefix inside the prompt
                plen = min(DEFAULT_PREFIX_LENGTH, n_in) if group else 0
            ctx = v["context_tokens"] or 0
            session = v["session_id"]
            parts: list[_Part] = []
            if v["input_token_ids"] is not None:
                parts = [np.asarray(v["input_token_ids"], dtype=np.int32)]
            elif v["hash_ids"] is not None:
                parts = [
                    block_tokens(block_keys(block_base, v["hash_ids"]), v["hash_block_size"], n_in)
                ]
            elif ctx:
                prev = sessions.get(session)
                if prev is None:
                    raise WorkloadError(
                        f"{where}: context_tokens {ctx} but no earlier request of session "
                        f"{session!r}"
                    )
                if _parts_length(prev) < ctx:
                    raise WorkloadError(
                        f"{where}: context_tokens {ctx} exceeds the previous round's prompt + "
                        f"output ({_parts_length(prev)} tokens) of session {session!r}"
                    )
                parts = _take_parts(prev, ctx)
            elif plen and group:
                key = group_keys.get(group)
                if key is None:
                    key = group_keys[group] = stable_key(base, "prefix", group)
                parts = [(key, 0, plen)]
            used = _parts_length(parts)
            if n_in > used:
                parts.append((stable_key(base, "in", rid), 0, n_in - used))
            n_out = v["output_tokens"]
            out: list[_Part] = []
            if v["output_token_ids"] is not None:
                out = [np.asarray(v["output_token_ids"], dtype=np.int32)]
            elif n_out:
                out = [(stable_key(base, "out", rid), 0, n_out)]
            if session:
                sessions[session] = parts + out
            meta: dict[str, Any] = {}
            for name in ("client_id", "session_id", "prefix_group"):
                if v[name]:
                    meta[name] = v[name]
            for name in _META_INTS:
                if v[name]:
                    meta[name] = v[name]
            if session or v["round_index"]:
                meta["round_index"] = v["round_index"]
            if v["streaming"]:
                meta["streaming"] = True
            if v["reason_ratio"]:
                meta["reason_ratio"] = v["reason_ratio"]
            if plen and group:
                meta["prefix_length"] = plen
            if ctx:
                meta["context_tokens"] = ctx
            if v["input_token_ids"] is not None or v["output_token_ids"] is not None:
                meta["token_ids"] = "explicit"
            elif v["hash_ids"] is not None:
                meta["hash_ids"] = tuple(v["hash_ids"])
                meta["hash_block_size"] = v["hash_block_size"]
            yield Request(
                rid,
                arrival,
                _materialize_parts(parts),
                _materialize_parts(out),
                slo_class=v["slo_class"],
                tenant_id=v["tenant_id"],
                model=v["model"],
                metadata=meta,
                adapter=v["adapter"],
                adapter_rank=v["adapter_rank"],
            )


def header_notices(
    header: TraceV2Header, where: str, run: Mapping[str, Any] | None = None
) -> list[tuple[int, str]]:
    """What a replay does not apply from ``header``: (logging level, line) pairs.

    ``warm_up_requests`` is not applied: every request runs and is counted (the
    reference uses it only when comparing a recorded run with a simulated one). The
    ``server`` block records the server the trace came from and is not applied either:
    with ``run`` (the run's settings under the server block's keys) the values that
    differ are named; without it, a single line says the block is informational.
    """
    notes: list[tuple[int, str]] = []
    if header.warm_up_requests:
        n = header.warm_up_requests
        text = (
            f"{where}: warm_up_requests {n} is not applied: every request is simulated "
            "and counted in the results; to leave warm-up requests out, delete their rows "
            "(the reference uses the field only to skip them when comparing a recorded "
            "run with a simulation)"
        )
        notes.append((logging.WARNING, text))
    server = {k: header.server[k] for k in _COMPARED_SERVER_KEYS if header.server.get(k)}
    if not server:
        return notes
    if run is None:
        text = (
            f"{where}: the server block is informational (the server the trace was "
            "recorded or exported on) and is not applied; the run's own settings are used"
        )
        notes.append((logging.INFO, text))
        return notes
    differ = []
    for key, value in server.items():
        ours = run.get(key)
        if not ours:
            continue  # the run does not say: nothing to compare
        if isinstance(value, str) or isinstance(ours, str):
            same = str(value).strip().lower() == str(ours).strip().lower()
        else:
            same = value == ours
        if not same:
            differ.append(f"{key} {value} (run: {ours})")
    if differ:
        text = (
            f"{where}: server block differs from this run: {', '.join(differ)}; it is "
            "informational (the server the trace came from) and not applied: the run's "
            "settings are used"
        )
        notes.append((logging.WARNING, text))
    return notes


def iter_trace_v2(
    path: str | os.PathLike[str],
    *,
    streams: RandomStreams | None = None,
    seed: int = 0,
    run: Mapping[str, Any] | None = None,
    notices: bool = True,
    horizon: int = NEVER,
) -> Iterator[Request]:
    """Replay a trace v2 pair (header optional) as requests in file order.

    ``run``: the run's server settings (keys of the header's ``server`` block), to warn
    about the values that differ; ``notices=False`` logs nothing about the header
    (:func:`header_notices`). Reading stops at the first row later than ``horizon``."""
    header, records = load_trace_v2(path)
    header_path, data_path = trace_v2_paths(path)
    if header is not None and notices:
        where = f"trace header {header_path}"
        for level, note in header_notices(header, where, run):
            log.log(level, "%s", note)
    return replay_trace_v2(
        records,
        streams=streams or RandomStreams(seed),
        source=f"trace {data_path}",
        horizon=horizon,
    )
