"""A colocated cluster whose replica count follows an HPA-style controller
(docs/autoscaling.md; the controller itself is :mod:`inference_sim.cluster.scaler`).

New replicas load for the start-up time (routable only when loaded); removed replicas
stop receiving requests, drain what they hold, then leave when their last step ends.
Loading, ready and draining replicas all cost GPU time, up to the run's end: once no
work is left the controller's pending events (decisions, loads, leaves) are dropped, so
an idle tail neither counts nor shows. The replicas are instances built up front
(``max`` of them); the router sees the ready ones only, through a snapshot provider
rebuilt whenever that set changes. The results list per instance only the replicas
that existed at some time.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence
from typing import Any, NamedTuple

from inference_sim.cluster.scaler import (
    METRICS,
    AutoscaleConfig,
    PoolScaler,
)
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.cluster.snapshot import SnapshotProvider
from inference_sim.core.request import Request, RequestState
from inference_sim.engine.invariants import InvariantChecker
from inference_sim.instance.engine import Instance
from inference_sim.metrics.outcome import SimulationOutcome
from inference_sim.policies.base import (
    PolicyError,
    RouterState,
    RoutingDecision,
    RoutingPolicy,
    target_index,
)

__all__ = [
    "LEFT",
    "LOADED",
    "METRICS",
    "TICK",
    "AutoscaleClusterSimulator",
    "AutoscaleConfig",
    "ExtraEvents",
    "PoolChoice",
    "more_work",
    "route_among",
    "run_over",
]

TICK = 9  # a controller decision (instance index: the pool)
LOADED = 10  # a replica finished loading (instance index: the replica)
# (11 is P/D's unblock check)
LEFT = 12  # an emptied draining replica's last step ended: it leaves (index: the replica)
_CONTROLLER = (TICK, LOADED, LEFT)


class _AutoscaleChecker(InvariantChecker):
    """Controller events are not requests in flight."""

    def __init__(self, sim: ClusterSimulator) -> None:
        super().__init__(sim.instances, sim._log)
        self.sim = sim

    def in_transit(self) -> int:
        return -sum(1 for ev in self.sim._ext if ev[1] >= TICK)


class PoolChoice(NamedTuple):
    """Where a pool's router sent a request: the cluster-wide index, and the state and
    decision it decided on (for decision traces)."""

    instance: int
    state: RouterState
    decision: RoutingDecision


def route_among(
    policy: RoutingPolicy,
    snap: SnapshotProvider,
    members: list[int],
    pending: list[int],
    req: Request,
    now: int,
    also_pending: Sequence[int] | None = None,
) -> PoolChoice:
    """What ``policy`` picks among ``members`` (their pending counts fresh, plus
    ``also_pending`` by cluster-wide index when given).

    The policy sees the members only, at positions 0..k-1; it may answer with a position
    or with a member's id (``instance_<cluster-wide index>``).
    """
    if also_pending is None:
        snap.pending[:] = [pending[i] for i in members]
    else:
        snap.pending[:] = [pending[i] + also_pending[i] for i in members]
    state = snap.state(now)
    decision = policy.route(req, state)
    target = decision.target if isinstance(decision, RoutingDecision) else decision
    if target.__class__ is not int or not 0 <= target < len(members):
        if isinstance(target, str):
            names = [inst.name for inst in snap.instances]
            if target not in names:
                raise PolicyError(
                    f"routing policy {type(policy).__name__} chose {target!r}, which is not "
                    f"among the instances it was shown ({', '.join(names)})"
                )
            target = names.index(target)
        else:
            target = target_index(target, len(members), type(policy).__name__)
    if isinstance(decision, RoutingDecision):
        if decision.priority:
            req.priority = decision.priority
        if decision.target != target:  # an id: the position it names
            decision = dataclasses.replace(decision, target=target)
    else:
        decision = RoutingDecision(target)
    return PoolChoice(members[target], state, decision)


class ExtraEvents(ClusterSimulator):
    """Pushes the cluster events the P/D and autoscaling handlers add."""

    def _push_ext(self, t: int, klass: int, inst_idx: int, req: Request) -> None:
        heapq.heappush(self._ext, (t, klass, inst_idx, self._seq, req))
        self._seq += 1

    def _trace_routing(self, choice: PoolChoice, req: Request) -> None:
        """Tell the decision hook (decision traces, docs/analysis.md) where ``req`` went,
        with the pool state and decision the router saw (regret over that pool only)."""
        if self.decision_hook is not None:
            self.decision_hook("routing", req, choice.state, choice.decision)


class AutoscaleClusterSimulator(ExtraEvents):
    """A colocated cluster whose replica count follows an HPA-style controller."""

    def __init__(
        self, instances: Sequence[Instance], *, autoscale: AutoscaleConfig, initial: int, **kw: Any
    ) -> None:
        super().__init__(instances, **kw)
        self.cfg = autoscale
        self._refresh = kw.get("snapshot_refresh_interval", 0)
        self.scaler = PoolScaler(
            range(len(self.instances)),
            self.instances,
            autoscale,
            initial,
            schedule_load=lambda t, i: self._push_ext(t, LOADED, i, None),  # type: ignore[arg-type]
            schedule_leave=lambda t, i: self._push_ext(t, LEFT, i, None),  # type: ignore[arg-type]
            on_change=self._rebuild_ready,
            busy=self._busy,
            check=self.check_invariants,
        )
        self.scaler.on_leave = lambda i: replica_left(self.instances[i], (self.routing,))

    def _on_enqueue(self, now: int, inst_idx: int, req: Request) -> None:
        super()._on_enqueue(now, inst_idx, req)
        if req.state == RequestState.DROPPED:  # a draining replica may now hold nothing
            self.scaler.maybe_leave(inst_idx, now)

    def _start(self, stream: Any, sampler: Any) -> None:
        super()._start(stream, sampler)
        self._handlers[TICK] = self._on_tick
        self._handlers[LOADED] = self._on_loaded
        self._handlers[LEFT] = self._on_left
        self.scaler.reset()
        self._rebuild_ready()
        if self.check_invariants:
            self._checker = _AutoscaleChecker(self)
        self._push_ext(self.cfg.interval, TICK, 0, None)  # type: ignore[arg-type]

    def _rebuild_ready(self) -> None:
        ready = self.scaler.ready
        self._rsnap = SnapshotProvider(
            [self.instances[i] for i in ready], self._refresh, shared=self.snapshots
        )

    def _busy(self, i: int) -> bool:
        inst = self.instances[i]
        return bool(inst.running or inst.waiting or self.snapshots.pending[i])

    @property
    def rec(self) -> Any:
        return self.scaler.rec

    def scaling_periods(self) -> list[tuple[int, int]]:
        return self.scaler.scaling_periods(self._end_time)

    def _on_routing(self, now: int, _inst_idx: int, req: Request) -> None:
        pending = self.snapshots.pending
        choice = route_among(self.routing, self._rsnap, self.scaler.ready, pending, req, now)
        g = choice.instance
        self._trace_routing(choice, req)
        pending[g] += 1
        req.handled_by = g
        self._push_ext(now + self.instances[g].latency.queueing_time(req), 3, g, req)

    def _on_step(self, t_next_outside: int) -> None:
        now, inst_idx, _s = self._steps[0]
        super()._on_step(t_next_outside)
        if self.scaler.draining and inst_idx in self.scaler.draining:
            # The step's effects are applied at its start: if that emptied the replica,
            # it leaves when the step ends (busy_until), through its leave event.
            self.scaler.maybe_leave(inst_idx, now)

    def _on_tick(self, now: int, _i: int, _req: Any) -> None:
        if not more_work(self):  # the run is over: no decision on the idle tail
            run_over(self, now)
            return
        self.scaler.decide(now, self._log)
        self._push_ext(now + self.cfg.interval, TICK, 0, None)  # type: ignore[arg-type]

    def _on_loaded(self, now: int, i: int, _req: Any) -> None:
        if not run_over(self, now):
            self.scaler.loaded(i, now)

    def _on_left(self, now: int, i: int, _req: Any) -> None:
        self.scaler.left(i, now)

    def _finish(self, as_list: list[Request] | None, interrupted: bool) -> SimulationOutcome:
        drop_controller_events(self)
        self.scaler.close(self._end_time)
        outcome = super()._finish(as_list, interrupted)
        ever = sorted(self.scaler.provisioned)
        outcome.provisioned = ever
        # Per-instance figures only for the replicas that existed (the controller starts
        # the lowest free index first, so they are instances 0 .. k-1).
        outcome.instances = [outcome.instances[i] for i in ever]
        outcome.queue_length_sums = [outcome.queue_length_sums[i] for i in ever]
        return outcome

    def exists(self, i: int) -> bool:
        """Instance ``i`` holds its GPUs now (time series count only those)."""
        return self.scaler.exists(i)

    def autoscaling_summary(self) -> dict[str, Any]:
        """The results' ``autoscaling`` section."""
        return self.scaler.summary(self._log, self._end_time)


def replica_left(inst: Instance, routers: Sequence[Any]) -> None:
    """A replica's server process is gone: a later start on its GPUs begins with empty
    caches (``Instance.restart``), and routers that remember what they sent it (prefix or
    adapter affinity; a plug-in's optional ``forget(instance)``) forget it, as llm-d
    drops a deleted pod's entries."""
    inst.restart()
    for router in routers:
        forget = getattr(router, "forget", None)
        if callable(forget):
            forget(inst.index)


def more_work(sim: ClusterSimulator) -> bool:
    """True while requests remain to arrive, run or move (decisions stop after)."""
    if sim._upcoming is not None or sim._steps:
        return True
    if any(ev[1] < TICK for ev in sim._ext):
        return True
    return any(inst.running or inst.waiting for inst in sim.instances)


def drop_controller_events(sim: ClusterSimulator) -> None:
    """Remove pending decisions, loads and leaves: they are not requests in flight. In
    place: the event loop holds the heap."""
    sim._ext[:] = [ev for ev in sim._ext if ev[1] not in _CONTROLLER]
    heapq.heapify(sim._ext)


def run_over(sim: ClusterSimulator, now: int) -> bool:
    """True once no work is left and ``now`` is past the run's end (the end of the last
    step): the controller's pending events are then dropped, so nothing after the end
    (a load finishing, a decision) is shown or counted as GPU time."""
    if now <= sim._end_time or more_work(sim):
        return False
    drop_controller_events(sim)
    return True
