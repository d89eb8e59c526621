"""One pool's HPA-style replica controller (docs/autoscaling.md).

A :class:`PoolScaler` owns the replica states of a set of instances (a colocated
cluster, or one P/D pool): off, loading, ready, draining. The cluster that holds it
pushes its decision, load-finished and leave events, routes over
:attr:`PoolScaler.ready`, and asks :meth:`PoolScaler.maybe_leave` whenever a draining
replica may have emptied. An engine applies a step's effects when the step starts and
its GPU stays busy until the step ends (``busy_until``): an emptied replica leaves at
that end, through the leave event (:meth:`PoolScaler.left`), draining (not routable,
holding its slot) until then.

Every ``interval`` the controller reads a metric averaged over the ready replicas and
computes HPA's ``desired = ceil(ready * value / target)`` (no change within the 10%
tolerance), clamped to ``[min, max]``, then stabilises it: a scale-up takes the smallest
recommendation of the scale-up window, a scale-down the largest of the scale-down window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference_sim.core.rng import RandomStreams
from inference_sim.engine.invariants import InvariantViolation
from inference_sim.instance.engine import Instance
from inference_sim.metrics.stats import percentile_ms

METRICS = ("kv-utilization", "queue-depth", "in-flight", "ttft-p90")
TOLERANCE = 0.1  # Kubernetes HPA's default --horizontal-pod-autoscaler-tolerance
#: HPA's default scale-up policies (``behavior.scaleUp``, selectPolicy Max): per 15 s
#: period, at most 4 more replicas or 100 % more, whichever allows more.
SCALE_UP_PERIOD_US = 15_000_000
SCALE_UP_PODS = 4
SCALE_UP_PERCENT = 100

OFF, LOADING, READY, DRAINING = 0, 1, 2, 3


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
    #: Coefficient of variation of the load time: 0 (default) loads every replica in
    #: exactly ``startup``; above 0 each load draws a lognormal with mean ``startup``.
    startup_cv: float = 0.0
    seed: int = 0  # the run seed: the draws come from its stream ``replica-startup:<pool>``
    pool: str = "cluster"  # names the stream, so every pool draws independently


@dataclass
class AutoscaleRecord:
    """What the results' ``autoscaling`` section reports for one pool."""

    t_us: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    loading: list[int] = field(default_factory=list)
    draining: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    replica_us: int = 0  # replica-µs of loading + ready + draining


class PoolScaler:
    """The replicas of one pool and their controller."""

    def __init__(
        self,
        members: Sequence[int],
        instances: Sequence[Instance],
        cfg: AutoscaleConfig,
        initial: int,
        *,
        schedule_load: Callable[[int, int], None],
        on_change: Callable[[], None],
        busy: Callable[[int], bool],
        schedule_leave: Callable[[int, int], None] | None = None,
        check: bool = False,
    ) -> None:
        if not 1 <= cfg.min_replicas <= cfg.max_replicas == len(members):
            raise ValueError("autoscale bounds do not match the instances built")
        self.members = list(members)
        self.instances = instances
        self.cfg = cfg
        # Ready at start: the count given (at least one, at most the max). Below the min,
        # the rest load from t = 0 (HPA raises the replica count to its min at once, and
        # the new pods pay their start-up).
        self.start_ready = min(max(initial, 1), cfg.max_replicas)
        self.initial = max(self.start_ready, cfg.min_replicas)  # ready + loading at 0
        self.schedule_load = schedule_load  # (time, instance): its load ends then
        # (time, instance): it leaves then. None: a controller without an event loop
        # (unit tests): an emptied replica leaves at once, its GPU not consulted.
        self.schedule_leave = schedule_leave
        self.on_change = on_change  # the ready set changed: rebuild routing
        self.busy = busy  # (instance) -> still holds or expects work (cannot leave)
        self.check = check
        self.ttft_all = False  # ttft-p90 over every request (P/D pools), not the pool's
        # Requests an instance's vLLM would count as waiting outside its own wait queue
        # (P/D: handed off to a decode instance, before they join its batch).
        self.extra_waiting: Callable[[int], int] | None = None
        # A replica left (its server process is gone): the simulator restarts the
        # instance's state and tells the routers to forget it.
        self.on_leave: Callable[[int], None] | None = None
        self._setup()

    def reset(self) -> None:
        """Fresh per-run state (the simulator's ``_start``): the replicas at start, and
        the loads of those started below the min, whose ends are scheduled now."""
        self._setup()
        for i, t in self.ready_at.items():
            self.schedule_load(t, i)

    def _setup(self) -> None:
        first = set(self.members[: self.start_ready])
        extra = self.members[self.start_ready : self.initial]  # below the min: loading
        self.provisioned = set(first) | set(extra)  # replicas that existed at some time
        self.state = {i: (READY if i in first else OFF) for i in self.members}
        self.since = dict.fromkeys(self.members, 0)
        self.ready_at: dict[int, int] = {}  # a loading replica -> when its own load ends
        self.leave_at: dict[int, int] = {}  # an emptied draining replica -> when it leaves
        self.loads = 0  # loads started this run: the key of the next draw
        self.load_us: list[int] = []  # every load's drawn duration (startup_cv > 0)
        self.rec = AutoscaleRecord()
        # Seeded with the replicas at start, as Kubernetes' HPA records its first
        # recommendation (recordInitialRecommendation): no scale-down below the starting
        # count before the scale-down window has passed.
        self.history: list[tuple[int, int]] = [(0, self.initial)]
        # (time, replicas added) and (time, replicas removed): HPA's scaleUpEvents and
        # scaleDownEvents, from which the rate limit finds the count at the period's start.
        self.ups: list[tuple[int, int]] = []
        self.downs: list[tuple[int, int]] = []
        self._ttft_seen: set[int] = set()  # running requests whose TTFT was read
        self._log_rows = 0
        if extra:  # HPA: "Current number of replicas below Spec.MinReplicas"
            for i in extra:
                self.state[i] = LOADING
                self.ready_at[i] = self.load_time()
            self.ups.append((0, len(extra)))  # HPA stores this scale event too
            reason = f"{self.start_ready} at start, below the min {self.cfg.min_replicas}"
            self._event({"t_s": 0.0, "kind": "scale_up", "by": len(extra), "reason": reason})
        self._refresh_lists()
        self._record(0)

    def _refresh_lists(self) -> None:
        self.ready = [i for i in self.members if self.state[i] == READY]
        self.draining = [i for i in self.members if self.state[i] == DRAINING]

    def _count(self, st: int) -> int:
        return sum(1 for s in self.state.values() if s == st)

    def _event(self, event: dict[str, Any]) -> None:
        events = self.rec.events
        if self.check and events and event["t_s"] < events[-1]["t_s"]:
            raise InvariantViolation(
                f"autoscaling event {event['kind']} at {event['t_s']} s after one at "
                f"{events[-1]['t_s']} s (events out of time order)",
                time=round(event["t_s"] * 1e6),
            )
        events.append(event)

    def _record(self, now: int) -> None:
        rec = self.rec
        if self.check and rec.t_us and now < rec.t_us[-1]:
            raise InvariantViolation(
                f"replica counts recorded at {now} µs after {rec.t_us[-1]} µs", time=now
            )
        rec.t_us.append(now)
        rec.ready.append(self._count(READY))
        rec.loading.append(self._count(LOADING))
        rec.draining.append(self._count(DRAINING))
        if self.check and not (
            self.cfg.min_replicas <= rec.ready[-1] + rec.loading[-1] <= self.cfg.max_replicas
        ):
            raise InvariantViolation("replica count outside [min, max]", time=now)

    def _set(self, i: int, st: int, now: int) -> None:
        if self.state[i] != OFF:
            self.rec.replica_us += now - self.since[i]
        self.state[i] = st
        self.since[i] = now

    def _changed(self, now: int) -> None:
        self._refresh_lists()
        self.on_change()
        self._record(now)

    # --- replicas leaving and arriving ------------------------------------------------
    def exists(self, i: int) -> bool:
        """Replica ``i`` is ready, loading or draining now (its GPUs are held)."""
        return self.state.get(i, OFF) != OFF

    def maybe_leave(self, i: int, now: int) -> None:
        """A draining replica with nothing left leaves when its last step ends: at
        ``now`` if its GPU is idle, else through a leave event at ``busy_until`` (the
        engine applied the step at its start; the replica drains until then)."""
        if self.state.get(i) != DRAINING or i in self.leave_at or self.busy(i):
            return
        if self.schedule_leave is None:
            self._leave(i, max(now, self.since[i]))
            return
        end = max(now, self.since[i], self.instances[i].busy_until)
        if end <= now:
            self._leave(i, now)
        else:
            self.leave_at[i] = end
            self.schedule_leave(end, i)

    def left(self, i: int, now: int) -> None:
        """Replica ``i``'s leave event (scheduled by :meth:`maybe_leave`)."""
        if self.state.get(i) != DRAINING or self.leave_at.get(i) != now:
            return
        del self.leave_at[i]
        self.maybe_leave(i, now)  # nothing new can reach it, but check: leaves now

    def _leave(self, i: int, now: int) -> None:
        self._set(i, OFF, now)
        if self.on_leave is not None:
            self.on_leave(i)
        self._event({"t_s": now / 1e6, "kind": "left", "replica": self.name_of(i)})
        self._changed(now)

    def loaded(self, i: int, now: int) -> None:
        """Replica ``i``'s load ends (ignored if it was cancelled meanwhile)."""
        if self.state.get(i) != LOADING or now != self.ready_at.get(i):
            return
        del self.ready_at[i]
        event: dict[str, Any] = {"t_s": now / 1e6, "kind": "ready", "replica": self.name_of(i)}
        if self.cfg.startup_cv > 0:  # drawn load times: say how long this one took
            event["load_s"] = (now - self.since[i]) / 1e6
        self._set(i, READY, now)
        self._event(event)
        self._changed(now)

    def load_time(self) -> int:
        """The next load's duration in µs: ``startup``, or with ``startup_cv`` > 0 a
        lognormal draw with that mean and coefficient of variation. Draw ``k`` of a run
        comes from ``RandomStreams(seed).keyed("replica-startup:<pool>", k)``, so it
        depends only on the seed, the pool and the load's rank (no other stream moves)."""
        cfg = self.cfg
        k = self.loads
        self.loads += 1
        if cfg.startup_cv <= 0 or cfg.startup <= 0:
            return cfg.startup
        sigma2 = math.log1p(cfg.startup_cv**2)
        mu = math.log(cfg.startup) - sigma2 / 2  # so that the mean is `startup`
        gen = RandomStreams(cfg.seed).keyed(f"replica-startup:{cfg.pool}", k)
        us = round(float(gen.lognormal(mu, math.sqrt(sigma2))))
        self.load_us.append(us)
        return us

    def name_of(self, i: int) -> str:
        return self.instances[i].name

    # --- the controller ---------------------------------------------------------------
    def _ttft_samples(self, log: Any) -> list[int]:
        """TTFT (µs) of the requests whose first token no decision has read yet: those
        running now and those that finished since the last decision. vLLM records TTFT at
        the first token, so a burst shows up while its requests still generate."""
        seen = self._ttft_seen
        pool = range(len(self.instances)) if self.ttft_all else self.members
        out = []
        for i in pool:  # a P/D pool (ttft_all): the client's TTFT spans both pools
            for req in self.instances[i].running:
                if req.first_token_time >= 0 and req.index not in seen:
                    seen.add(req.index)
                    out.append(req.first_token_time - req.arrival_time)
        mine = None if self.ttft_all else set(self.members)
        for r in range(self._log_rows, len(log)):
            idx = log.index[r]
            if idx in seen:  # read while it ran; it has left: forget it (bounded memory)
                seen.discard(idx)
            elif log.ttft[r] >= 0 and (mine is None or log.instance[r] in mine):
                out.append(log.ttft[r])
        self._log_rows = len(log)
        return out

    def _metric(self, log: Any) -> float | None:
        """The pool's metric now; None when there is none (no first token since the last
        decision: HPA skips a decision whose metric is unavailable)."""
        ready = [self.instances[i] for i in self.ready]
        m = self.cfg.metric
        if m == "ttft-p90":  # ms, p90 of the first tokens since the last decision
            ttfts = sorted(self._ttft_samples(log))
            if not ttfts:
                return None
            return ttfts[min(len(ttfts) - 1, math.ceil(0.9 * len(ttfts)) - 1)] / 1000.0
        if not ready:
            return 0.0
        if m == "kv-utilization":
            return sum(i.kv_utilization for i in ready) / len(ready)
        extra = self.extra_waiting
        waiting = sum(len(i.waiting) + (extra(i.index) if extra else 0) for i in ready)
        if m == "queue-depth":
            return waiting / len(ready)
        return (waiting + sum(len(i.running) for i in ready)) / len(ready)

    def decide(self, now: int, log: Any) -> None:
        """One decision at ``now``."""
        for i, t in list(self.leave_at.items()):
            if t == now:  # its last step ended now: gone before the decision reads
                self.left(i, now)
        cfg = self.cfg
        value = self._metric(log)
        if value is None:
            return  # no metric: no recommendation, no scaling (as HPA)
        loading = self._count(LOADING)
        current = len(self.ready) + loading
        raw = self._recommendation(value, current, loading)
        if raw is None:
            return  # no replica reports a metric: no decision (as HPA)
        raw = min(max(raw, cfg.min_replicas), cfg.max_replicas)
        self.history.append((now, raw))
        keep = max(cfg.up_window, cfg.down_window)
        # HPA keeps the recommendations strictly inside a window (after now - window)
        # besides the current one.
        self.history = [(t, r) for t, r in self.history if now - t < keep or t == now]

        def within(window: int) -> list[int]:
            return [r for t, r in self.history if now - t < window or t == now]

        if raw > current:
            desired = max(current, min(within(cfg.up_window)))
            # The rate limit never takes the count below the current one: a scale-up
            # reading cannot scale down (horizontal.go, convertDesiredReplicasWithBehaviorRate:
            # "if scaleUpLimit < CurrentReplicas { scaleUpLimit = CurrentReplicas }").
            desired = min(desired, max(current, self._scale_up_limit(now, current)))
        elif raw < current:
            # HPA's default behavior.scaleDown policy (100 % per 15 s) gives a scale-down
            # limit of int(start x 0) = 0 (calculateScaleDownLimitWithBehaviors), clamped
            # to <= current: it never binds above --autoscale-min, so only the
            # stabilisation window holds a scale-down back.
            desired = min(current, max(within(cfg.down_window)))
        else:
            desired = current
        reason = f"{cfg.metric}={value:.4g} target={cfg.target:g} recommends {raw}"
        if desired > current:
            self._scale_up(now, desired - current, reason)
        elif desired < current:
            self._scale_down(now, current - desired, reason)

    def _recommendation(self, value: float, current: int, loading: int) -> int | None:
        """HPA's replica count for ``value`` (replica_calculator.go). A per-replica
        average is read from the ready replicas; the ones still loading have no metric,
        and HPA counts them at 0 when it would scale up and at the target when it would
        scale down, keeping the count if that brings the ratio within tolerance or turns
        its direction (so a load already under way is neither doubled nor cancelled by a
        reading of the ready replicas alone). The TTFT p90 is one value for the pool."""
        cfg = self.cfg
        ready = len(self.ready)
        averaged = cfg.metric != "ttft-p90"
        if averaged and not ready:
            return None
        ratio = value / cfg.target
        if abs(ratio - 1.0) <= TOLERANCE:
            return current
        if not (averaged and loading):
            return math.ceil(ready * ratio)
        fill = 0.0 if ratio > 1.0 else cfg.target
        filled = (value * ready + fill * loading) / (ready + loading) / cfg.target
        if abs(filled - 1.0) <= TOLERANCE or (filled > 1.0) != (ratio > 1.0):
            return current
        return math.ceil((ready + loading) * filled)

    def _scale_up_limit(self, now: int, current: int) -> int:
        """HPA's default scale-up policies: from the count at the start of the current
        15 s period, +4 replicas or +100 %, whichever is more. The count at the period's
        start is the current one less the replicas added and plus those removed in the
        period (horizontal.go, calculateScaleUpLimitWithScalingRules:
        ``currentReplicas - replicasAddedInCurrentPeriod + replicasDeletedInCurrentPeriod``):
        without the removed ones a scale-down between two scale-ups (cancelled loads)
        would make the period look as if it started lower than it did."""
        keep = SCALE_UP_PERIOD_US  # HPA counts the events strictly after now - period
        self.ups = [(t, k) for t, k in self.ups if now - t < keep]
        self.downs = [(t, k) for t, k in self.downs if now - t < keep]
        start = current - sum(k for _t, k in self.ups) + sum(k for _t, k in self.downs)
        return max(start + SCALE_UP_PODS, math.ceil(start * (1 + SCALE_UP_PERCENT / 100)))

    def _scale_up(self, now: int, k: int, reason: str) -> None:
        free = [i for i in self.members if self.state[i] == OFF][:k]
        for i in free:
            self.provisioned.add(i)
            self._set(i, LOADING, now)
            self.ready_at[i] = now + self.load_time()
            self.schedule_load(self.ready_at[i], i)
        if free:
            self.ups.append((now, len(free)))
            self._event({"t_s": now / 1e6, "kind": "scale_up", "by": len(free), "reason": reason})
            self._changed(now)

    def _scale_down(self, now: int, k: int, reason: str) -> None:
        # Loading replicas are cancelled first (the newest), then the ready ones that became
        # ready last.
        loading = [i for i in self.members if self.state[i] == LOADING][::-1][:k]
        for i in loading:
            self._set(i, OFF, now)
            del self.ready_at[i]
        k -= len(loading)
        victims: list[int] = []
        if k > 0:
            # Kubernetes' ReplicaSet deletes the pod ready for the shortest time first
            # (controller_utils ActivePodsWithRanks); it does not know what a pod holds.
            victims = sorted(self.ready, key=lambda i: (-self.since[i], -i))[:k]
            for i in victims:
                self._set(i, DRAINING, now)
        # HPA's scaleDownEvents (only the last period's matter: drop the older ones)
        self.downs = [(t, n) for t, n in self.downs if now - t < SCALE_UP_PERIOD_US]
        self.downs.append((now, len(loading) + len(victims)))
        self._event(
            {"t_s": now / 1e6, "kind": "scale_down", "by": len(loading) + len(victims),
             "reason": reason}
        )  # fmt: skip
        self._changed(now)
        for i in list(self.draining):
            self.maybe_leave(i, now)

    # --- results ---------------------------------------------------------------------
    def close(self, end: int) -> None:
        """End of run: replicas still up (loading, ready, draining) count until ``end``,
        an emptied draining one until it would have left if that is sooner. The
        simulator has dropped the events due after the work ended (a load ending then
        is neither shown nor counted)."""
        for i, s in self.state.items():
            if s != OFF:
                stop = min(end, self.leave_at.get(i, end))
                self.rec.replica_us += max(0, stop - self.since[i])
                self.since[i] = max(self.since[i], stop)

    def scaling_periods(self, end: int) -> list[tuple[int, int]]:
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
            spans.append((start, max(start + 1, end)))
        return spans

    def _latency_split(self, log: Any, end: int) -> dict[str, Any]:
        """TTFT and E2E of finished requests that arrived during scaling, and the rest."""
        spans = self.scaling_periods(end)
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

    def summary(self, log: Any, end: int) -> dict[str, Any]:
        """This pool's ``autoscaling`` figures."""
        cfg = self.cfg
        rec = self.rec
        gpu_hours = rec.replica_us * cfg.gpus_per_replica / 3.6e9
        peak = max(
            r + lo + d for r, lo, d in zip(rec.ready, rec.loading, rec.draining, strict=True)
        )
        out: dict[str, Any] = {
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
            "peak_replicas": peak,
            "scale_events": len([e for e in rec.events if e["kind"].startswith("scale")]),
            "events": rec.events,
            "latency": self._latency_split(log, end),
            "replicas": {
                "t_s": [t / 1e6 for t in rec.t_us],
                "ready": rec.ready,
                "loading": rec.loading,
                "draining": rec.draining,
            },
        }
        if cfg.startup_cv > 0:  # only then: results with constant loads stay as they were
            loads = self.load_us
            out["replica_startup_cv"] = cfg.startup_cv
            out["replica_load_s"] = {
                "count": len(loads),
                "mean": sum(loads) / len(loads) / 1e6 if loads else 0.0,
                "min": min(loads) / 1e6 if loads else 0.0,
                "max": max(loads) / 1e6 if loads else 0.0,
            }
        return out
