"""Replica autoscaling with Kubernetes HPA semantics (docs/autoscaling.md).

Every ``interval`` the controller reads a metric averaged over the ready replicas and
computes HPA's ``desired = ceil(current * value / target)`` (no change within the 10%
tolerance), then stabilises it: a scale-up takes the smallest recommendation of the
scale-up window, a scale-down the largest of the scale-down window, and the result is
clamped to ``[min, max]``. New replicas load for ``startup`` µs (routable only when
loaded); removed replicas stop receiving requests, drain what they hold, then leave.
Loading, ready and draining replicas all cost GPU time.

The replicas are instances built up front (``max`` of them); the router sees the ready
ones only, through a snapshot provider rebuilt whenever that set changes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.cluster.snapshot import SnapshotProvider
from inference_sim.core.request import Request
from inference_sim.engine.invariants import InvariantChecker, InvariantViolation
from inference_sim.instance.engine import Instance
from inference_sim.metrics.outcome import SimulationOutcome
from inference_sim.metrics.stats import percentile_ms
from inference_sim.policies.base import RoutingDecision, target_index

METRICS = ("kv-utilization", "queue-depth", "in-flight", "ttft-p90")
TOLERANCE = 0.1  # Kubernetes HPA's default --horizontal-pod-autoscaler-tolerance

OFF, LOADING, READY, DRAINING = 0, 1, 2, 3
_TICK = 9  # a controller decision
_LOADED = 10  # a replica finished loading


@dataclass
class AutoscaleConfig:
    """The controller's settings (all times in µs)."""

    min_replicas: int
    max_replicas: int
    metric: str
    target: float
    interval: int
    startup: int
    up_window: int = 0
    down_window: int = 300_000_000
    gpus_per_replica: int = 1
    gpu_hour_price: float = 0.0


@dataclass
class AutoscaleRecord:
    """What the results' ``autoscaling`` section reports."""

    t_us: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    loading: list[int] = field(default_factory=list)
    draining: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    replica_us: int = 0  # replica-µs of loading + ready + draining


class _AutoscaleChecker(InvariantChecker):
    def __init__(self, sim: AutoscaleClusterSimulator) -> None:
        super().__init__(sim.instances, sim._log)
        self.sim = sim

    def in_transit(self) -> int:
        return -sum(1 for ev in self.sim._ext if ev[1] >= _TICK)


class AutoscaleClusterSimulator(ClusterSimulator):
    """A colocated cluster whose replica count follows an HPA-style controller."""

    def __init__(
        self, instances: Sequence[Instance], *, autoscale: AutoscaleConfig, initial: int, **kw: Any
    ) -> None:
        super().__init__(instances, **kw)
        cfg = autoscale
        if not 1 <= cfg.min_replicas <= cfg.max_replicas == len(self.instances):
            raise ValueError("autoscale bounds do not match the instances built")
        self.cfg = cfg
        self.initial = min(max(initial, cfg.min_replicas), cfg.max_replicas)
        self._refresh = kw.get("snapshot_refresh_interval", 0)

    # --- per-run state -------------------------------------------------------------
    def _start(self, stream: Any, sampler: Any) -> None:
        super()._start(stream, sampler)
        self._handlers[_TICK] = self._on_tick
        self._handlers[_LOADED] = self._on_loaded
        n = len(self.instances)
        self.state = [READY if i < self.initial else OFF for i in range(n)]
        self.since = [0] * n  # when each replica's current state began
        self.rec = AutoscaleRecord()
        self.history: list[tuple[int, int]] = []  # (time, raw recommendation)
        self._log_rows = 0
        self._rebuild_ready()
        self._record(0)
        if self.check_invariants:
            self._checker = _AutoscaleChecker(self)
        self._push_ext(self.cfg.interval, _TICK, -1, None)  # type: ignore[arg-type]

    def _rebuild_ready(self) -> None:
        self.ready = [i for i, s in enumerate(self.state) if s == READY]
        self._rsnap = SnapshotProvider([self.instances[i] for i in self.ready], self._refresh)
        glob = self.snapshots.pending
        self._rsnap.pending[:] = [glob[i] for i in self.ready]
        self._draining = [i for i, s in enumerate(self.state) if s == DRAINING]

    def _count(self, st: int) -> int:
        return sum(1 for s in self.state if s == st)

    def _record(self, now: int) -> None:
        rec = self.rec
        rec.t_us.append(now)
        rec.ready.append(self._count(READY))
        rec.loading.append(self._count(LOADING))
        rec.draining.append(self._count(DRAINING))
        if self._checker is not None and not (
            self.cfg.min_replicas <= rec.ready[-1] + rec.loading[-1] <= self.cfg.max_replicas
        ):
            raise InvariantViolation("replica count outside [min, max]", time=now)

    def _set(self, i: int, st: int, now: int) -> None:
        if self.state[i] != OFF:
            self.rec.replica_us += now - self.since[i]
        self.state[i] = st
        self.since[i] = now

    # --- routing over the ready replicas ----------------------------------------------
    def _on_routing(self, now: int, _inst_idx: int, req: Request) -> None:
        snap = self._rsnap
        decision = self.routing.route(req, snap.state(now))
        target = decision.target if isinstance(decision, RoutingDecision) else decision
        n = len(self.ready)
        if target.__class__ is not int or not 0 <= target < n:
            target = target_index(target, n, type(self.routing).__name__)
        if isinstance(decision, RoutingDecision) and decision.priority:
            req.priority = decision.priority
        g = self.ready[target]
        self.snapshots.pending[g] += 1
        snap.pending[target] += 1
        req.handled_by = g
        self._push_ext(now + self.instances[g].latency.queueing_time(req), 3, g, req)

    def _on_enqueue(self, now: int, inst_idx: int, req: Request) -> None:
        if inst_idx in self.ready:
            local = self.ready.index(inst_idx)
            if self._rsnap.pending[local] > 0:
                self._rsnap.pending[local] -= 1
        super()._on_enqueue(now, inst_idx, req)

    def _on_step(self, t_next_outside: int) -> None:
        inst_idx = self._steps[0][1]
        super()._on_step(t_next_outside)
        if self._draining and inst_idx in self._draining:
            self._maybe_leave(inst_idx, self.instances[inst_idx].busy_until)

    def _maybe_leave(self, i: int, now: int) -> None:
        inst = self.instances[i]
        if inst.running or inst.waiting or self.snapshots.pending[i]:
            return
        now = max(now, self.since[i])
        self._set(i, OFF, now)
        self._rebuild_ready()
        self.rec.events.append({"t_s": now / 1e6, "kind": "left", "replica": inst.name})
        self._record(now)

    # --- the controller ---------------------------------------------------------------
    def _metric(self, now: int) -> float:
        ready = [self.instances[i] for i in self.ready]
        m = self.cfg.metric
        if not ready:
            return 0.0
        if m == "kv-utilization":
            return sum(i.kv_utilization for i in ready) / len(ready)
        if m == "queue-depth":
            return sum(len(i.waiting) for i in ready) / len(ready)
        if m == "in-flight":
            return sum(len(i.waiting) + len(i.running) for i in ready) / len(ready)
        # ttft-p90 (ms) of the requests completed since the last decision
        log = self._log
        rows = range(self._log_rows, len(log))
        self._log_rows = len(log)
        ttfts = sorted(log.ttft[r] for r in rows if log.ttft[r] >= 0)
        if not ttfts:
            return 0.0
        return ttfts[min(len(ttfts) - 1, math.ceil(0.9 * len(ttfts)) - 1)] / 1000.0

    def _on_tick(self, now: int, _i: int, _req: Any) -> None:
        cfg = self.cfg
        value = self._metric(now)
        current = self._count(READY) + self._count(LOADING)
        ratio = value / cfg.target
        raw = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(len(self.ready) * ratio)
        raw = min(max(raw, cfg.min_replicas), cfg.max_replicas)
        self.history.append((now, raw))
        horizon = max(cfg.up_window, cfg.down_window)
        self.history = [(t, r) for t, r in self.history if now - t <= horizon]
        if raw > current:
            desired = max(current, min(r for t, r in self.history if now - t <= cfg.up_window))
        elif raw < current:
            desired = min(current, max(r for t, r in self.history if now - t <= cfg.down_window))
        else:
            desired = current
        reason = f"{cfg.metric}={value:.4g} target={cfg.target:g} recommends {raw}"
        if desired > current:
            self._scale_up(now, desired - current, reason)
        elif desired < current:
            self._scale_down(now, current - desired, reason)
        if self._more_work():
            self._push_ext(now + cfg.interval, _TICK, -1, None)  # type: ignore[arg-type]

    def _more_work(self) -> bool:
        if self._upcoming is not None or self._steps:
            return True
        if any(ev[1] < _TICK for ev in self._ext):
            return True
        return any(inst.running or inst.waiting for inst in self.instances)

    def _scale_up(self, now: int, k: int, reason: str) -> None:
        free = [i for i, s in enumerate(self.state) if s == OFF][:k]
        for i in free:
            self._set(i, LOADING, now)
            self._push_ext(now + self.cfg.startup, _LOADED, i, None)  # type: ignore[arg-type]
        if free:
            self.rec.events.append(
                {"t_s": now / 1e6, "kind": "scale_up", "by": len(free), "reason": reason}
            )
            self._record(now)

    def _scale_down(self, now: int, k: int, reason: str) -> None:
        # Loading replicas are cancelled first (the newest), then the least busy ready ones.
        loading = [i for i, s in enumerate(self.state) if s == LOADING][::-1][:k]
        for i in loading:
            self._set(i, OFF, now)
        k -= len(loading)
        victims: list[int] = []
        if k > 0:

            def load(i: int) -> tuple[int, int]:
                inst = self.instances[i]
                return (len(inst.running) + len(inst.waiting), -i)

            victims = sorted(self.ready, key=load)[:k]
            for i in victims:
                self._set(i, DRAINING, now)
        self._rebuild_ready()
        self.rec.events.append(
            {"t_s": now / 1e6, "kind": "scale_down", "by": len(loading) + len(victims),
             "reason": reason}
        )  # fmt: skip
        self._record(now)
        for i in list(self._draining):
            self._maybe_leave(i, now)

    def _on_loaded(self, now: int, i: int, _req: Any) -> None:
        if self.state[i] != LOADING or now - self.since[i] != self.cfg.startup:
            return  # cancelled (or cancelled and restarted) meanwhile
        self._set(i, READY, now)
        self._rebuild_ready()
        self.rec.events.append(
            {"t_s": now / 1e6, "kind": "ready", "replica": self.instances[i].name}
        )
        self._record(now)

    # --- end of run ------------------------------------------------------------------
    def _finish(self, as_list: list[Request] | None, interrupted: bool) -> SimulationOutcome:
        self._ext = [ev for ev in self._ext if ev[1] < _TICK]
        heapq.heapify(self._ext)
        end = self._end_time
        for i, s in enumerate(self.state):
            if s != OFF:
                self.rec.replica_us += max(0, end - self.since[i])
                self.since[i] = end
        return super()._finish(as_list, interrupted)

    def scaling_periods(self) -> list[tuple[int, int]]:
        """``[start, end)`` µs spans during which some replica was loading or draining."""
        rec = self.rec
        spans: list[tuple[int, int]] = []
        start = -1
        for t, lo, d in zip(rec.t_us, rec.loading, rec.draining, strict=True):
            if lo + d > 0 and start < 0:
                start = t
            elif lo + d == 0 and start >= 0:
                if t > start:
                    spans.append((start, t))
                start = -1
        if start >= 0:
            spans.append((start, max(start + 1, self._end_time)))
        return spans

    def _latency_split(self) -> dict[str, Any]:
        """TTFT and E2E of finished requests that arrived during scaling, and the rest."""
        log = self._log
        spans = self.scaling_periods()
        groups: dict[str, tuple[list[int], list[int]]] = {
            "during_scaling": ([], []),
            "steady": ([], []),
        }
        for row in range(len(log)):
            if not log.finished[row]:
                continue
            t = log.arrival[row]
            inside = any(a <= t < b for a, b in spans)
            ttfts, e2es = groups["during_scaling" if inside else "steady"]
            ttfts.append(log.ttft[row])
            e2es.append(log.e2e[row])
        out: dict[str, Any] = {"scaling_periods_s": [[a / 1e6, b / 1e6] for a, b in spans]}
        for name, (ttfts, e2es) in groups.items():
            ttfts.sort()
            e2es.sort()
            out[name] = {
                "completed_requests": len(ttfts),
                "ttft_mean_ms": sum(ttfts) / len(ttfts) / 1000.0 if ttfts else 0.0,
                "ttft_p90_ms": percentile_ms(ttfts, 90),
                "ttft_p99_ms": percentile_ms(ttfts, 99),
                "e2e_p90_ms": percentile_ms(e2es, 90),
            }
        return out

    def autoscaling_summary(self) -> dict[str, Any]:
        """The results' ``autoscaling`` section."""
        cfg = self.cfg
        rec = self.rec
        gpu_hours = rec.replica_us * cfg.gpus_per_replica / 3.6e9
        return {
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "metric": cfg.metric,
            "target": cfg.target,
            "interval_s": cfg.interval / 1e6,
            "replica_startup_s": cfg.startup / 1e6,
            "scale_up_window_s": cfg.up_window / 1e6,
            "scale_down_window_s": cfg.down_window / 1e6,
            "gpus_per_replica": cfg.gpus_per_replica,
            "gpu_hours": gpu_hours,
            "gpu_hour_price": cfg.gpu_hour_price,
            "cost": gpu_hours * cfg.gpu_hour_price,
            "peak_replicas": max(
                r + lo + d for r, lo, d in zip(rec.ready, rec.loading, rec.draining, strict=True)
            ),
            "scale_events": len([e for e in rec.events if e["kind"].startswith("scale")]),
            "events": rec.events,
            "latency": self._latency_split(),
            "replicas": {
                "t_s": [t / 1e6 for t in rec.t_us],
                "ready": rec.ready,
                "loading": rec.loading,
                "draining": rec.draining,
            },
        }
