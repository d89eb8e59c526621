"""The outcome of one run as data: summary, per-request records, time series, per-instance blocks.

``Results.requests`` and ``Results.timeseries`` are pandas DataFrames when pandas is
installed (``pip install 'inference-sim[data]'``), else lists of dicts;
``Results.records`` is always the list of per-request dicts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from inference_sim.analysis.run import fairness_section, fitness_section, trace_section
from inference_sim.analysis.trace import DECISION_COLUMNS, DecisionTrace
from inference_sim.core.extras import have, require
from inference_sim.core.inputs import (
    MAX_RESULTS_BYTES,
    is_replicates_document,
    load_json,
    read_text,
)
from inference_sim.core.outfiles import output_path
from inference_sim.metrics.output import (
    anomaly_block,
    kv_block,
    metrics_block,
    results_document,
    slo_block,
    write_json_atomic,
)
from inference_sim.metrics.request_log import RecordView
from inference_sim.metrics.timeseries import TIMESERIES_COLUMNS, empty_table, table_rows

#: Per-request columns and their kinds, in DataFrame order. The last four are empty
#: strings when the request has no such attribute.
REQUEST_COLUMNS: dict[str, str] = {
    "arrived_at": "float",
    "requestID": "str",
    "num_prefill_tokens": "int",
    "num_decode_tokens": "int",
    "ttft_ms": "float",
    "itl_ms": "float",
    "e2e_ms": "float",
    "scheduling_delay_ms": "float",
    "slo_class": "str",
    "tenant_id": "str",
    "handled_by": "str",
    "model": "str",
}

_DTYPES = {"int": "int64", "float": "float64", "str": "object"}


#: The ``results_path`` that means stdout, for the CLI and ``simulate()`` alike.
STDOUT_PATH = "-"


def _frame(rows: list[dict[str, Any]], kinds: Mapping[str, str]) -> Any:
    """A DataFrame with one column per ``kinds`` entry (in order) and stable dtypes."""
    import pandas as pd

    data: dict[str, Any] = {}
    for name, kind in kinds.items():
        if kind == "str":
            values: list[Any] = [r.get(name) or "" for r in rows]
        else:
            values = [r.get(name) for r in rows]
        series = pd.Series(values, dtype=_DTYPES[kind] if kind != "str" else None, name=name)
        if kind == "str":
            series = series.astype(str)
        data[name] = series
    # Optional fields (KV reloads, P/D, LoRA) sit on some records only: every key any
    # record has is a column (missing cells are null), in the order first seen.
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in kinds))
    for name in extra:
        values = [r.get(name) for r in rows]
        present = [v for v in values if v is not None]
        ints = present and all(isinstance(v, int) and not isinstance(v, bool) for v in present)
        # Integers with gaps stay integers (nullable), not floats with NaN.
        data[name] = pd.Series(values, name=name, dtype="Int64" if ints else None)
    return pd.DataFrame(data)


class Results:
    """What :func:`inference_sim.simulate` returns.

    ``summary`` holds the reference's metric keys, then this project's own keys and
    ``config`` (the resolved configuration, with the seed and package version).
    ``records`` holds one dict per request that reached an instance, in generation
    order; ``requests`` is the same as a DataFrame when pandas is installed.
    ``timeseries`` holds the sampled signals (see :mod:`inference_sim.metrics.timeseries`).
    ``instance_summaries`` holds one summary per instance (2+ instances only).
    """

    def __init__(
        self,
        summary: dict[str, Any],
        requests: Iterable[dict[str, Any]] | None = None,
        instance_summaries: list[dict[str, Any]] | None = None,
        timeseries: dict[str, Any] | None = None,
    ) -> None:
        self.summary = summary
        self.records: Sequence[dict[str, Any]] = _as_records(requests)
        self.instance_summaries = list(instance_summaries or [])
        self.timeseries_table: dict[str, Any] = timeseries or empty_table()
        self._frames: dict[str, Any] = {}

    # --- display ---------------------------------------------------------------------
    def __repr__(self) -> str:
        """One line: deployment, workload, completed requests, TTFT/E2E p99, throughput."""
        s = self.summary
        bits = [f"{_short(s.get('completed_requests'))} completed"]
        for key, name in (("ttft_p99_ms", "TTFT p99"), ("e2e_p99_ms", "E2E p99")):
            if key in s:
                bits.append(f"{name} {_short(s[key])} ms")
        if "responses_per_sec" in s:
            bits.append(f"{_short(s['responses_per_sec'])} req/s")
        flag = " (interrupted)" if s.get("interrupted") else ""
        return f"<Results{flag}: {self.describe()}: {', '.join(bits)}>"

    def describe(self) -> str:
        """Deployment and workload in a few words (``... H100 TP2 x1, chatbot at 10 req/s``)."""
        cfg = self.config
        if not cfg:
            return "results"
        return (
            f"{cfg.get('model', '')} {cfg.get('hardware', '')} TP{cfg.get('tp', '')} "
            f"x{cfg.get('num_instances', 1)}, {workload_text(cfg)}, seed {cfg.get('seed', '')}"
        )

    def _repr_html_(self) -> str:
        """Jupyter's view: headline metrics table and the TTFT/E2E CDFs (inline SVG)."""
        return str(_view("html")(self))

    def compare(self, *others: Results, labels: Sequence[str] | None = None) -> Any:
        """This run and ``others`` side by side (see :func:`inference_sim.compare`)."""
        return _view("compare")([self, *others], labels=labels)

    # --- views -----------------------------------------------------------------------
    @property
    def requests(self) -> Any:
        """Per-request records: a DataFrame (pandas installed) or a list of dicts."""
        if not have("pandas"):
            return self.records
        return self.requests_frame()

    @requests.setter
    def requests(self, value: Iterable[dict[str, Any]]) -> None:
        self.records = _as_records(value)
        self._frames.pop("requests", None)

    @property
    def timeseries(self) -> Any:
        """Sampled signals, one row per (time, series): a DataFrame or a list of dicts."""
        if not have("pandas"):
            return table_rows(self.timeseries_table)
        return self.timeseries_frame()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved run configuration (every option, seed, package version)."""
        return dict(self.summary.get("config") or {})

    def requests_frame(self) -> Any:
        """Per-request records as a pandas DataFrame (needs the ``data`` extra)."""
        require("pandas", "data", "Results.requests as a DataFrame")
        if "requests" not in self._frames:
            self._frames["requests"] = _frame(list(self.records), REQUEST_COLUMNS)
        return self._frames["requests"]

    def timeseries_frame(self) -> Any:
        """The time series as a pandas DataFrame (needs the ``data`` extra)."""
        require("pandas", "data", "Results.timeseries as a DataFrame")
        if "timeseries" not in self._frames:
            self._frames["timeseries"] = _frame(
                table_rows(self.timeseries_table), TIMESERIES_COLUMNS
            )
        return self._frames["timeseries"]

    # --- output ----------------------------------------------------------------------
    def to_dict(self, *, stream: bool = False) -> dict[str, Any]:
        """The results-file document: summary keys, ``requests``, ``timeseries``, ``config``.

        ``stream=True`` (used by :meth:`write_json`) leaves ``requests`` as a list-like
        that builds the records while the JSON encoder writes them."""
        doc = results_document(self.summary, self.records, stream=stream)
        if self.timeseries_table.get("columns", {}).get("time_s"):
            config = doc.pop("config", None)
            doc["timeseries"] = self.timeseries_table
            if config is not None:
                doc["config"] = config
        if self.instance_summaries:
            doc["instances"] = self.instance_summaries
            if "config" in doc:
                doc["config"] = doc.pop("config")
        return doc

    def summary_document(self) -> dict[str, Any]:
        """What ``blis run --output json`` prints: the summary (nested blocks such as
        ``slo_metrics`` included), then ``instances`` (2+ instances), then ``config``;
        full precision, no per-request records."""
        doc = {k: v for k, v in self.summary.items() if k != "config"}
        if self.instance_summaries:
            doc["instances"] = self.instance_summaries
        if "config" in self.summary:
            doc["config"] = self.summary["config"]
        return doc

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """The results file at ``path``; ``"-"`` means stdout, as ``--results-path -``
        (the same bytes ``blis run --results-path -`` prints, then a newline)."""
        if os.fspath(path) == STDOUT_PATH:
            import sys

            from inference_sim.core.outfiles import indented_json

            sys.stdout.writelines(indented_json(self.to_dict(stream=True)))
            sys.stdout.write("\n")
            return
        from inference_sim.core.outfiles import OutputPathError, check_output_file

        try:  # the checks of --results-path: a folder, a missing folder, a trailing slash
            check_output_file(path)
        except OutputPathError as exc:
            raise OutputPathError(f"{os.fspath(path)}: cannot write: {exc}") from None
        write_json_atomic(path, self.to_dict(stream=True))

    def report(self) -> str:
        """The text ``blis run`` prints on stdout."""
        return stdout_report(self.summary, self.instance_summaries)

    def to_parquet(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``requests.parquet``, ``timeseries.parquet`` and ``summary.json`` to ``directory``.

        Needs the ``data`` extra (pandas and pyarrow). ``summary.json`` holds the
        summary (with ``config``) and the per-instance summaries. Each file is written
        to a temporary name first and renamed, so readers never see half a file.
        """
        require("pandas", "data", "Results.to_parquet")
        require("pyarrow", "data", "Results.to_parquet")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in (
            ("requests", self.requests_frame()),
            ("timeseries", self.timeseries_frame()),
        ):
            with output_path(out / f"{name}.parquet") as tmp:
                frame.to_parquet(tmp, index=False)
        write_json_atomic(
            out / "summary.json",
            {
                "summary": self.summary,
                "instances": self.instance_summaries,
                "timeseries_interval_us": self.timeseries_table.get("interval_us", 0),
            },
        )
        return out

    # --- input -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Results:
        """Rebuild from a results-file document (as :meth:`to_dict` or ``--results-path``)."""
        summary = {k: v for k, v in doc.items() if k not in ("requests", "timeseries", "instances")}
        return cls(
            summary=summary,
            requests=doc.get("requests") or [],
            instance_summaries=doc.get("instances") or [],
            timeseries=doc.get("timeseries"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Results:
        """Read a results JSON file, or a folder written by :meth:`to_parquet`."""
        p = Path(path)
        if p.is_dir():
            return cls._load_parquet(p)
        try:
            doc = load_json(read_text(p, MAX_RESULTS_BYTES))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{p}: not a results file: not JSON ({exc.msg} at line {exc.lineno} "
                f"column {exc.colno})"
            ) from None
        if not isinstance(doc, dict):
            raise ValueError(f"{p}: not a results file (expected a JSON object)")
        check_results_document(doc)
        try:
            check_results_fields(doc, doc.get("instances") or [], doc.get("requests") or [])
            if doc.get("timeseries") is not None:
                check_timeseries(doc["timeseries"])
        except ValueError as exc:  # a results file with a bad value: name file and field
            raise ValueError(f"{os.fspath(path)}: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def _load_parquet(cls, folder: Path) -> Results:
        pd = require("pandas", "data", "reading a Parquet results folder")
        require("pyarrow", "data", "reading a Parquet results folder")
        meta_path = folder / "summary.json"
        if not meta_path.exists():
            raise ValueError(f"{folder}: no summary.json (not a to_parquet() folder)")
        meta = load_json(read_text(meta_path, MAX_RESULTS_BYTES))
        if not isinstance(meta, dict) or not isinstance(meta.get("summary"), dict):
            raise ValueError(f"{meta_path}: expected an object with a summary")
        check_results_document(meta["summary"])
        records: list[dict[str, Any]] = []
        if (folder / "requests.parquet").exists():
            records = _records_from_frame(pd.read_parquet(folder / "requests.parquet"))
        try:  # a null cell of a float column reads back as NaN: NaN is null here
            instances = meta.get("instances") or []
            check_results_fields(meta["summary"], instances, records, nan_is_null=True)
        except ValueError as exc:
            raise ValueError(f"{os.fspath(folder)}: {exc}") from None
        table = empty_table()
        if (folder / "timeseries.parquet").exists():
            ts = pd.read_parquet(folder / "timeseries.parquet")
            cols = {}
            for name in ts.columns:
                values = ts[name].tolist()
                if name == "cache_hit_rate":
                    values = [None if v != v else v for v in values]  # NaN -> None
                cols[name] = values
            table = {"interval_us": meta.get("timeseries_interval_us", 0), "columns": cols}
            try:
                check_timeseries(
                    table,
                    nan_is_null=True,
                    interval_field="summary.json: timeseries_interval_us",
                    column_field="timeseries.parquet: column ",
                )
            except ValueError as exc:
                raise ValueError(f"{os.fspath(folder)}: {exc}") from None
        return cls(
            summary=meta.get("summary", {}),
            requests=records,
            instance_summaries=meta.get("instances", []),
            timeseries=table,
        )

    # --- analysis: decision trace, regret, fitness, fairness (docs/analysis.md) ------
    #: The run's decision trace (``--trace-level decisions``; not kept in results files).
    decision_trace: DecisionTrace | None = None

    @property
    def decision_records(self) -> list[dict[str, Any]]:
        """One dict per admission and routing decision ([] without tracing)."""
        trace = self.decision_trace
        return list(trace.records()) if trace is not None else []

    @property
    def decisions(self) -> Any:
        """The decision trace: a DataFrame (pandas installed) or a list of dicts."""
        if not have("pandas"):
            return self.decision_records
        return self.decisions_frame()

    def decisions_frame(self) -> Any:
        """The decision trace as a DataFrame, one row per decision (needs pandas)."""
        pd = require("pandas", "data", "Results.decisions as a DataFrame")
        if "decisions" not in self._frames:
            frame = pd.DataFrame.from_records(self.decision_records, columns=DECISION_COLUMNS)
            frame["regret"] = frame["regret"].astype("float64")
            self._frames["decisions"] = frame
        return self._frames["decisions"]

    def write_trace(self, path: str | os.PathLike[str]) -> None:
        """Write the decision trace as JSON lines (or Parquet for a ``.parquet`` path)."""
        if self.decision_trace is None:
            raise ValueError("no decision trace: run with trace_level='decisions'")
        self.decision_trace.write(path)

    @property
    def trace_summary(self) -> dict[str, Any] | None:
        """Decisions, admitted/rejected, target distribution, mean/max regret (or None)."""
        ts = self.summary.get("trace_summary")
        return dict(ts) if ts is not None else None

    @property
    def regret(self) -> dict[str, Any] | None:
        """``{"mean", "max", "count", "k"}`` over routing decisions (None without tracing)."""
        ts = self.summary.get("trace_summary")
        if ts is None:
            return None
        return {
            "mean": ts.get("mean_regret", 0.0),
            "max": ts.get("max_regret", 0.0),
            "count": ts.get("routing_decisions", 0),
            "k": ts.get("counterfactual_k", 0),
        }

    @property
    def fitness(self) -> dict[str, Any] | None:
        """``{"score", "components"}`` with ``fitness_weights`` given, else None."""
        if "fitness_score" not in self.summary:
            return None
        return {
            "score": self.summary["fitness_score"],
            "components": dict(self.summary.get("fitness_components") or {}),
        }

    @property
    def fairness(self) -> dict[str, Any] | None:
        """``{"jain_fairness_index", "tenants"}`` when requests carry tenant ids, else None."""
        if "jain_fairness_index" not in self.summary:
            return None
        return {
            "jain_fairness_index": self.summary["jain_fairness_index"],
            "tenants": dict(self.summary.get("tenant_metrics") or {}),
        }

    @property
    def slo_distributions(self) -> dict[str, Any]:
        """Per SLO class TTFT and E2E statistics in ms (2+ classes, else {})."""
        return dict(self.summary.get("slo_distributions") or {})


#: Views of a Results that need the report layer above this module (the HTML block,
#: the comparison table); :mod:`inference_sim.report.notebook` registers them, and the
#: package imports it, so they are there whenever ``Results`` can be imported.
VIEWS: dict[str, Callable[..., Any]] = {}


def _rate_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _file_name(path: Any, inline: str) -> str:
    """A path's file name (``examples/x.yaml`` -> ``x.yaml``); ``inline`` for an in-memory
    input (a spec given as a mapping, ``simulate(trace=df)``'s ``<in memory>``)."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        return inline
    text = os.fspath(path)
    return inline if text.startswith("<") else os.path.basename(text) or text


def _trace_format(cfg: Mapping[str, Any]) -> str:
    """The trace's format: as given, else detected from the file if it is still there
    ("" when it cannot be told)."""
    fmt = str(cfg.get("trace_format") or "auto")
    if fmt != "auto":
        return fmt
    path = cfg.get("workload_traces_filepath")
    if not isinstance(path, str) or not os.path.isfile(path):
        return ""
    from inference_sim.workload.formats import detect_format

    try:
        return str(detect_format(path))
    except Exception:  # unreadable now: the run read it; the description just omits it
        return ""


def workload_text(cfg: Mapping[str, Any]) -> str:
    """The workload as the run had it, from its resolved ``config``.

    ``workload spec shared-prefixes.yaml at 40 req/s`` (the spec's own rate, or the one
    ``--aggregate-rate`` scaled it to), ``trace t.csv (mooncake)``, ``workload chatbot at
    10 req/s (poisson)``: a spec or a trace supplies the requests, so the distribution
    options (``--workload distribution``, ``--arrival``, the lengths) are not named.
    """
    rate = cfg.get("rate")
    spec = cfg.get("workload_spec")
    if spec:
        text = f"workload spec {_file_name(spec, '(inline)')}"
        if isinstance(rate, int | float) and rate > 0:
            text += f" at {_rate_text(rate)} req/s"
        return text
    work = str(cfg.get("workload") or "distribution")
    if work == "traces":
        text = f"trace {_file_name(cfg.get('workload_traces_filepath'), '(in memory)')}"
        fmt = _trace_format(cfg)
        if fmt:
            text += f" ({fmt})"
        speedup = cfg.get("trace_speedup")
        if isinstance(speedup, int | float) and speedup != 1:
            text += f" replayed x{speedup:g}"
        if isinstance(rate, int | float) and rate != 1:  # only a length trace keeps a rate
            text += f" at {_rate_text(rate)} req/s"
        return text
    text = f"workload {work}"
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        text += f" at {_rate_text(rate)} req/s"
    arrival = cfg.get("arrival")
    if arrival and arrival != "constant":
        burst = cfg.get("burstiness")
        shape = f", burstiness {burst:g}" if arrival == "gamma" and burst not in (None, 1) else ""
        text += f" ({arrival}{shape})"
    return text


def unused_workload_options(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """Options in a resolved ``config`` that did not shape this run's requests: those of
    the distribution and preset workloads when a spec or a trace supplied them, those of
    a spec or a trace when the requests were drawn from the distribution options.

    The config repeats every option (a replay needs them), so a report showing them all
    would describe a spec run as a 512-token distribution with constant arrivals."""
    from inference_sim.config.unused import SYNTHETIC_FLAGS, TRACE_FLAGS

    shaping = ("arrival", "burstiness", *SYNTHETIC_FLAGS)
    if cfg.get("workload_spec"):
        return ("workload", "workload_traces_filepath", *TRACE_FLAGS, *shaping)
    if cfg.get("workload") == "traces":
        return ("workload_spec", "aggregate_rate", "num_requests", *shaping)
    burst = () if cfg.get("arrival") == "gamma" else ("burstiness",)
    return ("workload_spec", "aggregate_rate", "workload_traces_filepath", *TRACE_FLAGS, *burst)


def _view(name: str) -> Callable[..., Any]:
    view = VIEWS.get(name)
    if view is None:
        raise RuntimeError(f"Results.{name}: inference_sim.report.notebook is not loaded")
    return view


def _short(v: Any) -> str:
    """A number as a person reads it (4 significant digits, thousands separated)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.1f}"
        return f"{v:.3g}"
    return str(v)


def _as_records(value: Iterable[dict[str, Any]] | None) -> Sequence[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, RecordView):
        return value  # built on access: a million records are not held as dicts
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return _records_from_frame(value)
    return list(value)


def _missing(value: Any) -> bool:
    """A null cell: None, NaN or pandas' NA (lists and strings are never null)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")


def _records_from_frame(frame: Any) -> list[dict[str, Any]]:
    """DataFrame rows back to the results file's per-request dicts (empty strings dropped)."""
    out = []
    for row in frame.to_dict(orient="records"):
        rec: dict[str, Any] = {}
        for k, v in row.items():
            if REQUEST_COLUMNS.get(k) == "str" and k != "requestID" and not v:
                continue
            if k not in REQUEST_COLUMNS and _missing(v):
                continue  # an optional field this record did not have
            if hasattr(v, "item"):
                v = v.item()
            rec[k] = v
        out.append(rec)
    return out


def stdout_report(
    summary: Mapping[str, Any], instance_summaries: Sequence[Mapping[str, Any]]
) -> str:
    """``blis run``'s stdout: the reference's sections in its order (cli.md 8, step 20),
    then this simulator's own (``=== Tenant Fairness ===``), so that a script reading
    the reference's output finds each section where it was, as with JSON keys."""
    parts = [metrics_block(s) for s in instance_summaries]
    parts.append(metrics_block(summary))
    parts.append(fitness_section(summary))
    parts.append(anomaly_block(summary))
    parts.append(kv_block(summary))
    parts.append(slo_block(summary))
    parts.append(trace_section(summary))
    parts.append(fairness_section(summary))  # new output after the reference's
    return "".join(parts)


#: Keys every results summary has (metrics/summary.py writes them); a JSON document
#: without them is some other file, and a report of it would be empty or wrong.
RESULTS_KEYS = ("completed_requests", "injected_requests", "vllm_estimated_duration_s")


def check_results_document(doc: Mapping[str, Any]) -> None:
    """ValueError (one line) unless ``doc`` has the shape of a results file (issue 21)."""
    missing = [k for k in RESULTS_KEYS if k not in doc]
    if missing and is_replicates_document(doc):
        raise ValueError(
            "a --seeds/--replicates results file (the mean over several runs, each run's "
            "summary under runs); report one run: blis run --seed N --results-path FILE"
        )
    if missing:
        raise ValueError(
            f"missing {', '.join(missing)}; expected a file written by "
            "`blis run --results-path` (or Results.write_json)"
        )
    for key in RESULTS_KEYS:
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number, got {value!r}")
    for key in ("requests", "instances"):
        items = doc.get(key)
        if items is not None and not (
            isinstance(items, list) and all(isinstance(r, dict) for r in items)
        ):
            raise ValueError(f"{key} must be a list of objects")
    series = doc.get("timeseries")
    if series is not None and not (
        isinstance(series, dict) and isinstance(series.get("columns", {}), dict)
    ):
        raise ValueError("timeseries must be an object with columns")
    if not isinstance(doc.get("config", {}), dict):
        raise ValueError("config must be an object")


#: Per-request keys on every record ``blis run`` writes (metrics/request_log.py
#: ``RequestLog.records``), with what each may hold. ``ms``: a latency, null or
#: negative for a stage the request did not reach (``blis run`` writes 0; other tools
#: null or -1); ``count``: a whole number >= 0; ``time``: seconds; ``id``: text.
RECORD_FIELDS: dict[str, str] = {
    "arrived_at": "time",
    "requestID": "id",
    "num_prefill_tokens": "count",
    "num_decode_tokens": "count",
    "ttft_ms": "ms",
    "itl_ms": "ms",
    "e2e_ms": "ms",
    "scheduling_delay_ms": "ms",
}

_ALLOWED = {
    "time": "a number (seconds)",
    "id": "a string",
    "count": "a whole number >= 0",
    "ms": "a number (ms; null or negative when not reached)",
}

#: Summary metrics ``blis report`` / ``blis plot`` show as numbers: each a number or
#: null (for no such requests) in the summary and in every per-instance summary.
SUMMARY_NUMBER_KEYS = (
    "completed_requests",
    "responses_per_sec",
    "tokens_per_sec",
    "ttft_mean_ms",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_mean_ms",
    "itl_p99_ms",
    "tpot_mean_ms",
    "tpot_p99_ms",
    "e2e_mean_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "scheduling_delay_p99_ms",
    "prefix_cache_hit_rate",
    "preemption_count",
    "rejected_requests",
    "goodput_requests_per_sec",
)

_NUMBER_TYPES = (int, float)


def _shown_value(value: Any) -> str:
    """``value`` as the message shows it: JSON's spelling for null and non-finite numbers."""
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_problem(value: Any, kind: str, nan_is_null: bool) -> str | None:
    """Why ``value`` cannot be a record field of ``kind`` (None when it can)."""
    if kind == "id":
        return None if isinstance(value, str) else "must be a string"
    if value is None:
        return None if kind == "ms" else f"must be {_ALLOWED[kind]}"
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        return "must be a number" if kind == "ms" else f"must be {_ALLOWED[kind]}"
    if isinstance(value, float) and not math.isfinite(value):
        if nan_is_null and kind == "ms" and value != value:
            return None
        return f"must be {_ALLOWED[kind]}" if kind == "count" else "must be a finite number"
    if kind == "count" and (value < 0 or value != int(value)):
        return f"must be {_ALLOWED[kind]}"
    return None


_NONE = type(None)


def _column_ok(values: Sequence[Any], kind: str, nan_is_null: bool) -> bool:
    """Whether every value passes :func:`_field_problem`, checked a column at a time with
    C-speed builtins (the set of types, ``min`` for negatives, ``sum`` carrying NaN and
    infinities); exact per-value checks only for a column that may hold a bad value."""
    types = set(map(type, values))
    if kind == "id":
        return types <= {str}
    if types <= {int}:
        return kind != "count" or min(values) >= 0
    if kind != "count" and types <= {int, float, _NONE}:
        present = [v for v in values if v is not None] if _NONE in types else values
        if math.isfinite(sum(present)):
            return True
    return all(_field_problem(v, kind, nan_is_null) is None for v in values)


def check_records(records: Sequence[Mapping[str, Any]], *, nan_is_null: bool = False) -> None:
    """ValueError naming the first bad record field (``requests[i].key``) and what it may be.

    Refuses only what ``blis run`` never writes: a missing :data:`RECORD_FIELDS` key, a
    value of the wrong kind, NaN or infinity (``nan_is_null``: NaN latencies are null,
    as a Parquet folder stores them), and a null ``itl_ms`` on a finished request with
    more than one output token (its TPOT). The columns are gathered in one pass and
    checked with C-speed builtins; the loop over records that finds the culprit runs
    only when something is wrong.
    """
    if not records:
        return
    keys = tuple(RECORD_FIELDS)
    try:
        columns = {key: list(map(itemgetter(key), records)) for key in keys}
    except (KeyError, TypeError, IndexError):
        for i, r in enumerate(records):
            if not isinstance(r, Mapping):
                raise ValueError(
                    f"requests[{i}] must be an object, got {_shown_value(r)}"
                ) from None
            for key in keys:
                if key not in r:
                    raise ValueError(
                        f"requests[{i}] has no {key}: every record `blis run` writes has "
                        f"{', '.join(keys)}"
                    ) from None
        raise
    for key, kind in RECORD_FIELDS.items():
        values = columns[key]
        if not _column_ok(values, kind, nan_is_null):
            for i, v in enumerate(values):
                why = _field_problem(v, kind, nan_is_null)
                if why:
                    raise ValueError(f"requests[{i}].{key} {why}, got {_shown_value(v)}")
    itl = columns["itl_ms"]
    if None in itl or (nan_is_null and any(v != v for v in itl)):
        e2e, out = columns["e2e_ms"], columns["num_decode_tokens"]
        for i, v in enumerate(itl):
            if (v is None or v != v) and (e2e[i] or 0) > 0 and out[i] > 1:
                raise ValueError(
                    f"requests[{i}].itl_ms must be a number for a finished request "
                    f"(e2e_ms > 0, num_decode_tokens > 1), got {_shown_value(v)}"
                )


def check_summary_numbers(summary: Mapping[str, Any], where: str = "") -> None:
    """ValueError unless each :data:`SUMMARY_NUMBER_KEYS` entry present is a number or null."""
    for key in SUMMARY_NUMBER_KEYS:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES)):
            raise ValueError(f"{where}{key} must be a number (or null), got {_shown_value(value)}")


def check_results_fields(
    summary: Mapping[str, Any],
    instances: Sequence[Any],
    records: Sequence[Mapping[str, Any]],
    *,
    nan_is_null: bool = False,
) -> None:
    """The values ``blis report`` / ``blis plot`` read from a results file: the summary
    metrics (also per instance), the nested blocks the page shows as tables
    (:func:`check_summary_blocks`) and the per-request records. ValueError for the
    first bad one."""
    check_summary_numbers(summary)
    check_summary_blocks(summary)
    for i, inst in enumerate(instances):
        if isinstance(inst, Mapping):
            check_summary_numbers(inst, f"instances[{i}].")
    check_records(records, nan_is_null=nan_is_null)


# --- nested blocks and the time series: what the report pages dereference ------------


def _bad(field: str, allowed: str, value: Any) -> ValueError:
    return ValueError(f"{field} must be {allowed}, got {_shown_value(value)}")


def _object(value: Any, field: str, allowed: str = "an object") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(field, allowed, value)
    return value


def _objects_by_name(value: Any, field: str, what: str) -> Mapping[str, Any]:
    """An object whose every value is an object (``{"batch": {...}, "chat": {...}}``)."""
    block = _object(value, field, f"an object of {what}")
    for name, item in block.items():
        _object(item, f"{field}.{name}")
    return block


def _number(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES) or not math.isfinite(value):
        raise _bad(field, "a finite number", value)


def _list_of(value: Any, field: str, what: str, check: Callable[[Any, str], Any]) -> list[Any]:
    """``value`` as a list whose every item passes ``check`` (named ``field[i]``)."""
    if not isinstance(value, list):
        raise _bad(field, f"a list of {what}", value)
    for i, item in enumerate(value):
        check(item, f"{field}[{i}]")
    return value


def _list_of_objects(value: Any, field: str) -> list[Any]:
    return _list_of(value, field, "objects", _object)


def _numbers(value: Any, field: str) -> list[Any]:
    return _list_of(value, field, "numbers", _number)


def _autoscaling_pool(a: Mapping[str, Any], field: str) -> None:
    """One autoscaled pool (or the cluster): the figures the page formats as numbers,
    the replica counts it draws (one per time in ``t_s``) and the events it lists."""
    for key in ("replica_startup_s", "gpu_hours", "cost", "gpu_hour_price"):
        if key in a:
            _number(a[key], f"{field}.{key}")
    if a.get("replicas") is not None:
        rep = _object(a["replicas"], f"{field}.replicas")
        times = _numbers(rep.get("t_s") or [], f"{field}.replicas.t_s")
        for key in ("ready", "loading", "draining"):
            counts = _numbers(rep.get(key) or [], f"{field}.replicas.{key}")
            if counts and len(counts) != len(times):
                raise ValueError(
                    f"{field}.replicas.{key} has {len(counts)} values for {len(times)} times "
                    "(t_s): one count per time"
                )
    if a.get("events") is not None:
        for i, event in enumerate(_list_of_objects(a["events"], f"{field}.events")):
            if "t_s" in event:
                _number(event["t_s"], f"{field}.events[{i}].t_s")
    if a.get("latency") is not None:
        lat = _object(a["latency"], f"{field}.latency")
        for key in ("during_scaling", "steady"):
            if lat.get(key) is not None:
                _object(lat[key], f"{field}.latency.{key}")
        spans = lat.get("scaling_periods_s")
        if spans is not None and not isinstance(spans, list):
            raise _bad(f"{field}.latency.scaling_periods_s", "a list", spans)


def check_summary_blocks(summary: Mapping[str, Any]) -> None:
    """ValueError naming the first nested block (``slo_metrics``, ``stages``, ``pd``,
    ``autoscaling``, ``lora``, ``fidelity``) whose shape is not what ``blis run``
    writes, where the report pages would read it: a mapping where they look up keys, a
    list where they iterate, a number where they format one. null means absent."""
    if summary.get("slo_metrics") is not None:
        _objects_by_name(summary["slo_metrics"], "slo_metrics", "metrics per SLO class")
    if summary.get("stages") is not None:
        _list_of_objects(summary["stages"], "stages")
    if summary.get("pd") is not None:
        pd = _object(summary["pd"], "pd")
        if pd.get("pools") is not None:
            _objects_by_name(pd["pools"], "pd.pools", "figures per pool")
    if summary.get("autoscaling") is not None:
        a = _object(summary["autoscaling"], "autoscaling")
        pools = a.get("pools")
        if pools is not None:
            _objects_by_name(pools, "autoscaling.pools", "figures per pool")
        if pools:
            for key in ("gpu_hours", "cost"):
                if key in a:
                    _number(a[key], f"autoscaling.{key}")
            for name, pool in pools.items():
                _autoscaling_pool(pool, f"autoscaling.pools.{name}")
        else:
            _autoscaling_pool(a, "autoscaling")
    if summary.get("lora") is not None:
        lora = _object(summary["lora"], "lora")
        if lora.get("adapters") is not None:
            _objects_by_name(lora["adapters"], "lora.adapters", "figures per adapter")
        if lora.get("instances") is not None:
            _objects_by_name(lora["instances"], "lora.instances", "figures per instance")
    if summary.get("fidelity") is not None:
        fid = _object(summary["fidelity"], "fidelity")
        if fid.get("expected_abs_error_pct") is not None:
            errors = _object(fid["expected_abs_error_pct"], "fidelity.expected_abs_error_pct")
            for key in ("e2e", "tpot", "ttft"):
                if key in errors:
                    field = f"fidelity.expected_abs_error_pct.{key}"
                    entry = _object(errors[key], field, "an object with median, max and rows")
                    missing = [k for k in ("median", "max", "rows") if k not in entry]
                    if missing:
                        raise ValueError(f"{field} has no {missing[0]}: it needs median, max, rows")
        if fid.get("caveats") is not None and not isinstance(fid["caveats"], list):
            raise _bad("fidelity.caveats", "a list", fid["caveats"])


#: Time-series columns the report and the plots draw (each needs one value per row).
CHARTED_TIMESERIES = (
    "queue_depth",
    "running",
    "kv_utilization",
    "cache_hit_rate",
    "tokens_per_sec",
    "requests_per_sec",
)


def check_timeseries(
    table: Mapping[str, Any],
    *,
    nan_is_null: bool = False,
    interval_field: str = "timeseries.interval_us",
    column_field: str = "timeseries.columns.",
) -> None:
    """ValueError naming the first bad part of a time-series table: ``interval_us`` (a
    whole number of µs >= 0, 0 for automatic), a column that is not a list or has a
    different number of rows than ``time_s``, a drawn column that is missing, or a value
    of the wrong kind (``time_s`` a number, ``instance`` a string, the signals numbers
    or null)."""
    interval = table.get("interval_us", 0)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, _NUMBER_TYPES)
        or not math.isfinite(interval)
        or interval < 0
        or interval != int(interval)
    ):
        raise _bad(interval_field, "a whole number of µs >= 0 (0: automatic)", interval)
    columns = table.get("columns") or {}
    rows: int | None = None
    first = ""
    for name in ("time_s", *columns):
        if name not in columns:
            continue
        values = columns[name]
        if not isinstance(values, list):
            raise _bad(f"{column_field}{name}", "a list (one value per row)", values)
        if rows is None:
            rows, first = len(values), name
        elif len(values) != rows:
            raise ValueError(
                f"{column_field}{name} has {len(values)} values, {first} {rows}: every "
                "column has one value per row"
            )
    if not rows:
        return
    for name in ("time_s", "instance", *CHARTED_TIMESERIES):
        if name not in columns:
            raise ValueError(
                f"{column_field}{name} is missing: a table with rows has time_s, instance, "
                f"{', '.join(CHARTED_TIMESERIES)}"
            )
    # The record fields' kinds fit: time_s a number, instance a string, the signals a
    # number or null (NaN too where a Parquet null reads back as one).
    kinds = {"time_s": "time", "instance": "id"}
    for name in ("time_s", "instance", *CHARTED_TIMESERIES):
        kind = kinds.get(name, "ms")
        values = columns[name]
        if _column_ok(values, kind, nan_is_null):
            continue
        allowed = _ALLOWED[kind] if kind != "ms" else "a number or null"
        for i, v in enumerate(values):
            if _field_problem(v, kind, nan_is_null) is not None:
                raise _bad(f"{column_field}{name}[{i}]", allowed, v)
