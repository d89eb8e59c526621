"""Glue between ``blis run`` options and the workload sources (spec, traces, export).

Kept here so the option resolver and the runner only call two or three functions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.workload.arrivals import check_arrival, iter_arrival_times
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.formats import (
    TRACE_FORMATS,
    check_speedup,
    detect_format,
    open_trace,
    reader_horizon,
    speed_up,
)
from inference_sim.workload.generate import iter_spec_requests
from inference_sim.workload.lengthtrace import find_columns, iter_length_records, trace_columns
from inference_sim.workload.spec import WorkloadSpec, load_workload_spec, parse_workload_spec
from inference_sim.workload.trace_v2 import TraceV2Header, TraceV2Writer

log = logging.getLogger("inference_sim")
NEVER = 2**63 - 1
INLINE_SPEC = "<inline spec>"


@dataclass
class InlineWorkload:
    """Workloads given as Python objects instead of files (``simulate()``, run configs).

    ``spec``: a workload spec as a mapping (``workload_spec={...}``); ``trace``: the rows
    of a length trace (``simulate(trace=df)``: a pandas DataFrame or a list of dicts, the
    column names of :mod:`inference_sim.workload.lengthtrace`).
    """

    spec: Mapping[str, Any] | None = None
    trace: list[Mapping[str, Any]] | None = None


def resolve_workload_options(
    o: dict[str, Any], explicit: frozenset[str], inline: InlineWorkload | None = None
) -> WorkloadSpec | None:
    """Check the workload flags; load ``--workload-spec`` and fold it into ``o``.

    With a spec: its ``seed`` becomes the run seed unless ``--seed`` was given (then the
    flag replaces the spec's); its ``horizon`` (> 0) is used unless ``--horizon`` was
    given; its ``num_requests`` is used unless ``--num-requests`` was given (0: no cap).
    A spec with no bound at all (no cap, no horizon, no stages, no lifecycle windows) is
    rejected, as the reference does.
    """
    if o["trace_format"] not in TRACE_FORMATS:
        raise WorkloadError(
            f"--trace-format: unknown format {o['trace_format']!r}; "
            f"valid: {', '.join(TRACE_FORMATS)}"
        )
    if o["trace_block_size"] <= 0:
        raise WorkloadError(f"--trace-block-size must be > 0, got {o['trace_block_size']}")
    check_speedup(o["trace_speedup"])
    inline = inline or InlineWorkload()
    _check_aggregate_rate(o, explicit)
    if inline.trace is not None:
        if o["workload"] != "traces":
            raise WorkloadError(
                f"trace: an in-memory trace needs workload 'traces', not {o['workload']!r}"
            )
        o["trace_format"] = "lengths"
    _resolve_arrival(o, explicit, inline)
    path = o["workload_spec"]
    if not path:
        return None
    if inline.spec is not None:
        try:
            spec = parse_workload_spec(dict(inline.spec), source="inline")
        except WorkloadError as exc:
            raise WorkloadError(f"workload_spec (inline): {exc}") from None
        o["workload_spec"] = dict(inline.spec)  # echoed as given in the results' config
    else:
        spec = load_workload_spec(path)
    if "seed" in explicit:
        if o["seed"] != spec.seed:
            log.info("CLI --seed %s overrides workload-spec seed %s", o["seed"], spec.seed)
        spec = spec.with_seed(o["seed"])
    else:
        o["seed"] = spec.seed
    spec = _apply_rate(spec, o, explicit, path)
    if "horizon" not in explicit and spec.horizon > 0:
        o["horizon"] = spec.horizon
    if "num_requests" not in explicit:
        o["num_requests"] = spec.num_requests
    if o["num_requests"] <= 0 and o["horizon"] >= NEVER and not spec.self_bounded:
        raise WorkloadError(
            "--workload-spec requires either num_requests (in YAML or --num-requests) or "
            "--horizon to bound generation"
        )
    # Said once the checks above passed: a run they stop prints its one error line alone.
    for warning in spec.warnings:
        log.warning("workload spec %s: %s", path, warning)
    return spec


def _check_aggregate_rate(o: Mapping[str, Any], explicit: frozenset[str]) -> None:
    """``--aggregate-rate``: finite, >= 0 (0: the spec's own), and only with a spec."""
    scale = float(o.get("aggregate_rate", 0.0))
    if not (math.isfinite(scale) and scale >= 0):
        raise WorkloadError(
            f"--aggregate-rate must be a finite number >= 0 (0: the spec's own), got {scale}"
        )
    if scale > 0 and "aggregate_rate" in explicit and not o["workload_spec"]:
        raise WorkloadError(
            f"--aggregate-rate {scale:g}: no effect without --workload-spec (it scales a "
            "spec's aggregate_rate); --rate sets the rate of distribution and preset "
            "workloads"
        )


def _apply_rate(
    spec: WorkloadSpec, o: dict[str, Any], explicit: frozenset[str], path: str
) -> WorkloadSpec:
    """``--aggregate-rate R`` scales a spec: its ``aggregate_rate`` becomes R, so every
    client's rate is multiplied by the same factor (shares unchanged); a staged spec
    (its own time-varying rates) refuses an R other than its own mean.

    ``--rate`` does not apply to a spec: the reference ignores it there (cli.md 5), and
    scaling by it turned every reference command that passes ``--rate`` (1.0 by default)
    into another workload. Given with another value than the spec's, it is ignored with
    one warning pointing at ``--aggregate-rate``. ``o["rate"]`` then becomes the rate
    the spec offers (staged: the time-weighted mean of its stages), so results and
    plans never name a rate that did not run, and a results file used as ``--config``
    (which repeats that rate) replays without the warning."""
    if spec.stages:
        span = sum(st.end_us - st.start_us for st in spec.stages)
        own = sum(st.rate * (st.end_us - st.start_us) for st in spec.stages) / span
    else:
        own = spec.aggregate_rate
    offered = own
    scale = float(o.get("aggregate_rate", 0.0)) if "aggregate_rate" in explicit else 0.0
    if scale > 0 and not math.isclose(scale, own, rel_tol=1e-9):
        if spec.stages:
            raise WorkloadError(
                f"--aggregate-rate {scale:g}: the workload spec {path} sets its own rates in "
                f"load stages (mean {own:g} requests/s); remove --aggregate-rate or edit the "
                "stages"
            )
        log.info(
            "--aggregate-rate %g scales workload spec %s from aggregate_rate %g (x%g per client)",
            scale,
            path,
            own,
            scale / own,
        )
        spec = replace(spec, aggregate_rate=scale)
        offered = scale
    rate = float(o["rate"])
    if "rate" in explicit and not math.isclose(rate, offered, rel_tol=1e-9):
        if spec.stages:
            what = f"whose load stages set the rates (mean {offered:g} requests/s)"
            hint = "edit the stages to change them"
        else:
            what = f"whose aggregate_rate ({offered:g} requests/s) sets the rate"
            hint = f"give --aggregate-rate {rate:g} to scale the spec"
        log.warning(
            "--rate %g: no effect with --workload-spec %s, %s (the reference ignores "
            "--rate there too); %s",
            rate,
            path,
            what,
            hint,
        )
    if offered > 0:
        o["rate"] = offered
    return spec


def _resolve_arrival(o: dict[str, Any], explicit: frozenset[str], inline: InlineWorkload) -> None:
    """Check ``--arrival``/``--burstiness``; ``--burstiness`` alone means gamma (vLLM bench).

    They shape the distribution and preset workloads only: a workload spec sets an arrival
    process per client and a trace has its own times, so giving them there is an error.
    """
    if "burstiness" in explicit and "arrival" not in explicit:
        o["arrival"] = "gamma"
    check_arrival(o["arrival"], o["burstiness"])
    # Only values that change something: a results file repeats every option, defaults too.
    shaped = {"arrival": o["arrival"] != "constant", "burstiness": o["burstiness"] != 1.0}
    given = [f"--{n}" for n, changed in shaped.items() if n in explicit and changed]
    verb = "shape" if len(given) > 1 else "shapes"
    if given and o["workload_spec"]:
        raise WorkloadError(
            f"{' and '.join(given)} {verb} the distribution and preset workloads; "
            "a --workload-spec sets arrival per client (clients[].arrival.process)"
        )
    if given and o["workload"] == "traces" and not untimed_length_trace(o, inline):
        raise WorkloadError(
            f"{' and '.join(given)} {verb} the distribution and preset workloads; "
            "--workload traces replays the trace's own arrival times (only a length "
            "trace without a time column takes --rate and --arrival)"
        )


def untimed_length_trace(o: Mapping[str, Any], inline: InlineWorkload) -> bool:
    """Whether ``--workload-traces-filepath`` is a length trace without a time column."""
    if inline.trace is not None:
        # The first row decides (a later one cannot bring a time column: _Rows.widen).
        first = [str(k) for k in inline.trace[0]] if inline.trace else []
        return not first or find_columns(first, "trace row 1", pairs=False).time is None
    path = o["workload_traces_filepath"]
    if not path:
        return False
    fmt = o["trace_format"]
    if fmt == "auto":
        fmt = detect_format(path)
    return fmt == "lengths" and trace_columns(path).time is None


def spec_or_trace_requests(
    o: Mapping[str, Any],
    spec: WorkloadSpec | None,
    streams: RandomStreams,
    inline_trace: list[Mapping[str, Any]] | None = None,
) -> Iterable[Request] | None:
    """Requests of a workload spec or a trace (file or rows); None for the legacy generators."""
    if spec is not None:
        return iter_spec_requests(
            spec, streams=streams, horizon=o["horizon"], max_requests=o["num_requests"]
        )
    if o["workload"] != "traces":
        return None
    speedup = o["trace_speedup"]
    if inline_trace is not None:
        rows = iter_length_records(
            inline_trace,
            streams=streams,
            horizon=reader_horizon(o["horizon"], speedup),
            arrival_times=iter_arrival_times(
                o["arrival"], o["rate"], o["burstiness"], streams.generator("arrival")
            ),
        )
        return speed_up(rows, speedup, o["horizon"])
    reqs = open_trace(
        o["workload_traces_filepath"],
        o["trace_format"],
        streams=streams,
        block_size=o["trace_block_size"],
        horizon=o["horizon"],
        # a length trace without times: requests arrive at --rate, spaced per --arrival
        arrival_times=iter_arrival_times(
            o["arrival"], o["rate"], o["burstiness"], streams.generator("arrival")
        ),
        run_server=run_server(o),
        speedup=speedup,
    )
    if isinstance(reqs, list):  # the reference's CSV may be unsorted: serve by arrival
        reqs.sort(key=_arrival)
    return reqs


def _arrival(req: Request) -> int:
    return req.arrival_time


def run_server(o: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings under the keys of a trace v2 header's ``server`` block."""
    return {
        "type": "inference-sim",
        "model": o.get("model", ""),
        "tensor_parallel": o.get("tp", 0),
        "max_num_seqs": o.get("max_num_running_reqs", 0),
        "block_size": o.get("block_size_in_tokens", 0),
        "gpu_memory_utilization": o.get("gpu_memory_utilization", 0),
        "max_model_len": o.get("max_model_len", 0),
    }


def export_writer(o: Mapping[str, Any]) -> TraceV2Writer | None:
    """A trace v2 writer for ``--export-trace`` (opened now, so a bad path fails early)."""
    path = o.get("export_trace")
    if not path:
        return None
    header = TraceV2Header(
        mode="generated",
        workload_spec=o["workload_spec"] if isinstance(o.get("workload_spec"), str) else "",
        server={k: v for k, v in run_server(o).items() if k != "gpu_memory_utilization"},
    )
    return TraceV2Writer(path, header)
