"""Compact per-request results, filled as requests leave the simulation.

A request is written here when it finishes, or at the end of the run if it is still
waiting, running or on its way to an instance. After that the simulator holds no
reference to it, so memory grows with requests in flight, not with requests simulated.
Columns are typed arrays (8 bytes a value) rather than one dict per request.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from inference_sim.core.request import Request, RequestState

_NONE = -1


class StringColumn:
    """A string per row stored as a small integer code (4 bytes a row): SLO classes,
    tenants and model names take a handful of values over millions of requests."""

    __slots__ = ("_codes", "_ids", "_names")

    def __init__(self) -> None:
        self._codes = array("i")
        self._names: list[str] = [""]
        self._ids: dict[str, int] = {"": 0}

    def append(self, value: str) -> None:
        code = self._ids.get(value)
        if code is None:
            code = self._ids[value] = len(self._names)
            self._names.append(value)
        self._codes.append(code)

    def get(self, row: int) -> str | None:
        """The row's value, or None where it is empty."""
        code = self._codes[row]
        return self._names[code] if code else None

    def __bool__(self) -> bool:
        """Whether any row has a value."""
        return len(self._names) > 1


class RequestLog:
    """Per-request columns: identity, sizes and the latency figures in ticks."""

    __slots__ = (
        "adapter",
        "arrival",
        "e2e",
        "finished",
        "index",
        "instance",
        "itl_gaps",
        "model",
        "num_input",
        "num_output",
        "sched_delay",
        "slo_class",
        "tenant_id",
        "ttft",
    )

    def __init__(self) -> None:
        self.index = array("q")
        self.arrival = array("q")
        self.num_input = array("q")
        self.num_output = array("q")
        self.ttft = array("q")
        self.e2e = array("q")
        self.sched_delay = array("q")
        self.instance = array("q")
        self.finished = array("b")
        self.slo_class = StringColumn()
        self.tenant_id = StringColumn()
        self.model = StringColumn()
        self.adapter = StringColumn()  # LoRA adapter (docs/lora.md); "" = base model
        #: Request index -> its delivery events after the first token, for requests that
        #: received several tokens in one event (speculative decoding): the others have
        #: one per output token after the first (``num_output`` - 1).
        self.itl_gaps: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def add(self, req: Request) -> None:
        """Record ``req`` as it is now (finished, or unfinished at the end of the run)."""
        self.index.append(req.index)
        self.arrival.append(req.arrival_time)
        self.num_input.append(req.num_prompt_tokens)
        self.num_output.append(req.num_output_tokens)
        ftt = req.first_token_time
        self.ttft.append(ftt - req.arrival_time if ftt >= 0 else _NONE)
        done = req.state == RequestState.FINISHED
        self.finished.append(1 if done else 0)
        self.e2e.append(ftt - req.arrival_time + req.itl_sum if done else _NONE)
        fst = req.first_scheduled_time
        self.sched_delay.append(fst - req.arrival_time if fst >= 0 else _NONE)
        self.instance.append(req.handled_by)
        self.slo_class.append(req.slo_class)
        self.tenant_id.append(req.tenant_id)
        self.model.append(req.model)
        self.adapter.append(req.adapter)

    # --- views -------------------------------------------------------------------
    def rows_for(self, instances: set[int] | None) -> np.ndarray:
        """Row numbers (in generation order) of requests handled by ``instances``."""
        order = np.argsort(np.frombuffer(self.index, dtype=np.int64), kind="stable")
        if instances is None:
            return order
        inst = np.frombuffer(self.instance, dtype=np.int64)
        return order[np.isin(inst[order], list(instances))]

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        return np.frombuffer(getattr(self, name), dtype=np.int64)[rows]

    def records(
        self, rows: np.ndarray, extra: Mapping[int, Mapping[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The reference's per-request entries for ``rows``, in that order.

        ``extra`` maps a request index to keys appended to its entry (tiered KV loads).
        """
        out = []
        idx = np.frombuffer(self.index, dtype=np.int64)
        arr = np.frombuffer(self.arrival, dtype=np.int64)
        n_in = np.frombuffer(self.num_input, dtype=np.int64)
        n_out = np.frombuffer(self.num_output, dtype=np.int64)
        ttft = np.frombuffer(self.ttft, dtype=np.int64)
        e2e = np.frombuffer(self.e2e, dtype=np.int64)
        sched = np.frombuffer(self.sched_delay, dtype=np.int64)
        inst = np.frombuffer(self.instance, dtype=np.int64)
        for row in rows.tolist():
            t = int(ttft[row])
            e = int(e2e[row])
            o = int(n_out[row])
            s = int(sched[row])
            itl_ms = (e - t) / (o - 1) / 1000.0 if e >= 0 and o > 1 else 0.0
            rec: dict[str, Any] = {
                "arrived_at": int(arr[row]) / 1e6,
                "requestID": f"request_{int(idx[row])}",
                "num_prefill_tokens": int(n_in[row]),
                "num_decode_tokens": o,
                "ttft_ms": t / 1000.0 if t >= 0 else 0.0,
                "itl_ms": itl_ms,
                "e2e_ms": e / 1000.0 if e >= 0 else 0.0,
                "scheduling_delay_ms": s / 1000.0 if s >= 0 else 0.0,
            }
            slo = self.slo_class.get(row)
            if slo:
                rec["slo_class"] = slo
            tenant = self.tenant_id.get(row)
            if tenant:
                rec["tenant_id"] = tenant
            handled = int(inst[row])
            if handled >= 0:
                rec["handled_by"] = f"instance_{handled}"
            model = self.model.get(row)
            if model:
                rec["model"] = model
            adapter = self.adapter.get(row)
            if adapter:  # LoRA requests only: records without LoRA stay as they were
                rec["adapter"] = adapter
            if extra:
                more = extra.get(int(idx[row]))
                if more:
                    rec.update(more)
            out.append(rec)
        return out


class RecordView(Sequence[dict[str, Any]]):
    """The per-request entries of a run, built from the columnar log when read.

    A million-request run would need over a gigabyte for its entries as dicts; the view
    holds only the log's arrays and builds entries on access (``view[i]``, slices,
    iteration in chunks), so results files can be written as a stream. Entries are
    fresh dicts on each access: ``list(view)`` gives a list to modify.
    """

    _CHUNK = 4096

    def __init__(
        self, log: RequestLog, rows: np.ndarray, extra: Mapping[int, Mapping[str, Any]] | None
    ) -> None:
        self._log = log
        self._rows = rows
        self._extra = extra

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return self._log.records(self._rows[i], self._extra)
        n = len(self._rows)
        if not -n <= i < n:
            raise IndexError("record index out of range")
        i %= n
        return self._log.records(self._rows[i : i + 1], self._extra)[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for start in range(0, len(self._rows), self._CHUNK):
            yield from self._log.records(self._rows[start : start + self._CHUNK], self._extra)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordView | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self)} request records>"
