"""Per-instance and cluster signals sampled over simulated time.

Sampling semantics: the simulator calls the sampler at each sample time ``t`` before
it runs any event at or after ``t`` (see ``ClusterSimulator.run``), and engines never
fast-forward past a pending sample time. A sample at ``t`` therefore reflects every
arrival, routing decision, enqueue and engine step that *started* before ``t``. An
engine step's effects (tokens delivered, requests completed, KV blocks) are counted
when the step starts, so a step in progress at ``t`` is already included. The last
sample is taken at the end of the run (the end of the last step, or the horizon).

Gauges (``queue_depth``, ``running``, ``kv_utilization``) are values at the sample
time; rates (``tokens_per_sec``, ``requests_per_sec``, ``cache_hit_rate``) cover the
interval since the previous sample (0 / None for the first sample); counters
(``completed_requests``, ``output_tokens``, ``preemptions``) are cumulative.

Interval: a fixed ``interval_us`` (``--timeseries-interval``), or 0 for automatic:
sampling starts every 100 µs and, whenever more than 400 samples have been taken,
every other sample is dropped and the interval doubles, so a run of any length ends
with 200-400 samples at a round interval. A fixed interval is kept until the run holds
MAX_FIXED_SAMPLES samples; beyond that the same halving applies (a 2 µs interval over an
hour of simulated time would otherwise take billions of samples and never finish). Both
limits shrink so that the table holds at most MAX_TABLE_ROWS rows (one a sample and
series): a cluster of 10,000 instances keeps at most 25 samples.
Sampling never changes simulation results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

AUTO_TARGET = 200
AUTO_START_US = 100
MAX_FIXED_SAMPLES = 20_000
#: Most rows the table may hold (samples x (instances + 1)): a cluster of thousands of
#: instances keeps fewer samples instead of a table of gigabytes.
MAX_TABLE_ROWS = 250_000

#: Column name -> kind ("int", "float", "str"), in table order.
TIMESERIES_COLUMNS: dict[str, str] = {
    "time_s": "float",
    "instance": "str",
    "queue_depth": "int",
    "running": "int",
    "kv_utilization": "float",
    "cache_hit_rate": "float",
    "tokens_per_sec": "float",
    "requests_per_sec": "float",
    "completed_requests": "int",
    "output_tokens": "int",
    "preemptions": "int",
}

# One instance's raw sample: waiting, running, KV blocks used, completed, output tokens,
# cached prompt tokens, looked-up prompt tokens, preemptions.
_Raw = tuple[int, int, int, int, int, int, int, int]


class TimeseriesSampler:
    """Collects raw samples of ``instances``; :meth:`table` turns them into columns."""

    def __init__(
        self,
        instances: Sequence[Any],
        interval_us: int = 0,
        exists: Callable[[int], bool] | None = None,
    ) -> None:
        if interval_us < 0:
            raise ValueError(f"--timeseries-interval must be >= 0, got {interval_us}")
        self.instances = list(instances)
        self.fixed = interval_us > 0
        self.interval = interval_us if interval_us > 0 else AUTO_START_US
        self.times: list[int] = []
        self.samples: list[list[_Raw]] = []
        self.blocks = [inst.config.num_gpu_blocks for inst in self.instances]
        # Autoscaled runs: which instances hold their GPUs (the cluster's utilisation is
        # over the replicas that exist at the sample); None: all of them, always.
        self.exists = exists
        self.live_blocks: list[int] = []
        # Never fewer than 8 samples, whatever the instance count.
        self.row_cap = max(8, MAX_TABLE_ROWS // (len(self.instances) + 1))

    # --- called by the simulator ---------------------------------------------------
    def __call__(self, t: int) -> int:
        """Record the state at ``t``; return the next sample time."""
        self._record(t)
        limit = min(MAX_FIXED_SAMPLES if self.fixed else 2 * AUTO_TARGET, self.row_cap)
        if len(self.times) > limit:
            double = 2 * self.interval
            keep = [k for k, ts in enumerate(self.times) if ts % double == 0]
            self.times = [self.times[k] for k in keep]
            self.samples = [self.samples[k] for k in keep]
            self.live_blocks = [self.live_blocks[k] for k in keep]
            self.interval = double
        return (t // self.interval + 1) * self.interval

    def finish(self, end_time: int) -> None:
        """Take the closing sample at the end of the run (if later than the last one)."""
        if not self.times or end_time > self.times[-1]:
            self._record(end_time)

    def _record(self, t: int) -> None:
        row: list[_Raw] = []
        for inst in self.instances:
            st = inst.stats
            row.append(
                (
                    len(inst.waiting),
                    len(inst.running),
                    inst.kv.num_used,
                    st.completed,
                    st.total_output_tokens,
                    st.cached_prompt_tokens,
                    st.prefix_lookup_tokens,
                    st.preemption_count,
                )
            )
        self.times.append(t)
        self.samples.append(row)
        exists = self.exists
        if exists is None:
            self.live_blocks.append(sum(self.blocks))
        else:
            self.live_blocks.append(
                sum(b for i, b in enumerate(self.blocks) if exists(self.instances[i].index))
            )

    # --- output --------------------------------------------------------------------
    def table(self) -> dict[str, Any]:
        """``{"interval_us": ..., "columns": {name: [...]}}`` in long form.

        One row per (sample, series): the ``cluster`` row first, then one per instance
        (``instance_0``, ...), for every sample time.
        """
        names = ["cluster", *(inst.name for inst in self.instances)]
        cols: dict[str, list[Any]] = {name: [] for name in TIMESERIES_COLUMNS}
        prev: list[_Raw] | None = None
        prev_t = 0
        for t, row, live in zip(self.times, self.samples, self.live_blocks, strict=True):
            cluster = tuple(sum(v) for v in zip(*row, strict=True))
            series = [(cluster, live, prev_cluster(prev))]
            for i, raw in enumerate(row):
                series.append((raw, self.blocks[i], prev[i] if prev is not None else None))
            dt = (t - prev_t) / 1e6
            for name, (raw, blocks, before) in zip(names, series, strict=True):
                waiting, running, used, done, out, cached, looked, pre = raw
                cols["time_s"].append(t / 1e6)
                cols["instance"].append(name)
                cols["queue_depth"].append(waiting)
                cols["running"].append(running)
                cols["kv_utilization"].append(used / blocks if blocks else 0.0)
                if before is None or dt <= 0:
                    cols["cache_hit_rate"].append(None)
                    cols["tokens_per_sec"].append(0.0)
                    cols["requests_per_sec"].append(0.0)
                else:
                    d_looked = looked - before[6]
                    cols["cache_hit_rate"].append(
                        (cached - before[5]) / d_looked if d_looked > 0 else None
                    )
                    cols["tokens_per_sec"].append((out - before[4]) / dt)
                    cols["requests_per_sec"].append((done - before[3]) / dt)
                cols["completed_requests"].append(done)
                cols["output_tokens"].append(out)
                cols["preemptions"].append(pre)
            prev = row
            prev_t = t
        return {"interval_us": self.interval, "columns": cols}


def prev_cluster(prev: list[_Raw] | None) -> _Raw | None:
    if prev is None:
        return None
    return tuple(sum(v) for v in zip(*prev, strict=True))  # type: ignore[return-value]


def empty_table() -> dict[str, Any]:
    return {"interval_us": 0, "columns": {name: [] for name in TIMESERIES_COLUMNS}}


def table_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The table as one dict per row."""
    cols = table.get("columns") or {}
    names = [n for n in TIMESERIES_COLUMNS if n in cols] + [
        n for n in cols if n not in TIMESERIES_COLUMNS
    ]
    n = len(cols[names[0]]) if names else 0
    return [{name: cols[name][k] for name in names} for k in range(n)]
