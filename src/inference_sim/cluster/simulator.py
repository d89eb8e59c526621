"""The shared-clock event loop: arrival -> admission -> routing -> instance queue -> steps.

One heap orders every event by ``(time, class, instance, sequence)`` (see
``engine.events``). Arrivals are fed lazily from the arrival-ordered request list,
so the heap holds only in-flight work. Events later than the horizon never run.

Admission and routing decisions see a :class:`~inference_sim.policies.base.RouterState`
built by :class:`~inference_sim.cluster.snapshot.SnapshotProvider` at the decision's
tick. A request routed to an instance counts as pending there until its enqueue
event, so back-to-back decisions at one tick see each other's choices.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from inference_sim.cluster.snapshot import SnapshotProvider
from inference_sim.core.request import Request, RequestState
from inference_sim.engine.events import NEVER, EventClass
from inference_sim.engine.invariants import InvariantChecker
from inference_sim.instance.engine import Instance
from inference_sim.metrics.outcome import SimulationOutcome
from inference_sim.metrics.request_log import RequestLog
from inference_sim.policies.admission import AlwaysAdmit
from inference_sim.policies.base import (
    AdmissionDecision,
    AdmissionPolicy,
    RouterState,
    RoutingDecision,
    RoutingPolicy,
    target_index,
)
from inference_sim.policies.routing import RoundRobin

ProgressCallback = Callable[[int, int], None]
# decision_hook(kind, request, state, decision): kind "admission" (an AdmissionDecision)
# or "routing" (a RoutingDecision); called before the decision takes effect.
DecisionHook = Callable[[str, Request, RouterState, Any], None]

_logger = logging.getLogger("inference_sim")

_ADMISSION = int(EventClass.ADMISSION)
_ROUTING = int(EventClass.ROUTING)
_ENQUEUE = int(EventClass.ENQUEUE)


class ClusterSimulator:
    """Runs a request stream through admission, routing and N instances."""

    def __init__(
        self,
        instances: Sequence[Instance],
        *,
        admission: AdmissionPolicy | None = None,
        routing: RoutingPolicy | None = None,
        admission_latency: int = 0,
        routing_latency: int = 0,
        horizon: int = NEVER,
        max_model_len: int = 0,
        check_invariants: bool = False,
        snapshot_refresh_interval: int = 0,
        priority_policy: str = "constant",
        decision_hook: DecisionHook | None = None,
    ) -> None:
        if not instances:
            raise ValueError("at least one instance is required")
        if admission_latency < 0:
            raise ValueError(f"--admission-latency must be >= 0, got {admission_latency}")
        if routing_latency < 0:
            raise ValueError(f"--routing-latency must be >= 0, got {routing_latency}")
        self.instances = list(instances)
        self.admission = admission or AlwaysAdmit()
        self.routing = routing or RoundRobin()
        self.admission_latency = admission_latency
        self.routing_latency = routing_latency
        # The event loop's "no event" time is NEVER + 1: a larger horizon would let it
        # run past its end, so a horizon beyond NEVER means NEVER.
        self.horizon = min(horizon, NEVER)
        self.max_model_len = max_model_len
        self.check_invariants = check_invariants
        self.snapshots = SnapshotProvider(self.instances, snapshot_refresh_interval)
        if 0 < horizon < admission_latency + routing_latency:
            _logger.warning(
                "[cluster] horizon (%d) < pipeline latency (%d); no requests can complete — "
                "increase --horizon or reduce admission/routing latency",
                horizon,
                admission_latency + routing_latency,
            )
        self.priority_policy = priority_policy
        self.decision_hook = decision_hook
        # Set (by a signal handler, say) to end the run early: the loop looks at it every
        # progress_every events, then finishes as at the horizon, marked interrupted.
        self.stop_requested = False

    def run(
        self,
        requests: Iterable[Request],
        *,
        progress: ProgressCallback | None = None,
        progress_every: int = 200_000,
        sampler: Callable[[int], int] | None = None,
    ) -> SimulationOutcome:
        """Simulate ``requests``.

        A list may be in any order (it is served by arrival time, then list order); any
        other iterable is consumed lazily and must yield requests in arrival order.

        ``sampler(t)`` (optional) is called once for each sample time ``t`` (the first is
        0), before any event at or after ``t`` runs, so it observes every event and every
        engine step that started before ``t``; it returns the next sample time. Engines do
        not fast-forward past a pending sample time. Sampling never changes the results.
        """
        as_list = requests if isinstance(requests, list) else None
        if as_list is not None:
            stream: Iterator[Request] = iter(sorted(as_list, key=_arrival_time))
        else:
            stream = iter(requests)
        log = RequestLog()
        for inst in self.instances:
            inst.log = log
        # Two heaps: cluster and enqueue events, and instance steps. A step may run
        # ahead on its own (fast-forward) only up to the next event of the first kind.
        ext: list[tuple[int, int, int, int, Request]] = []
        steps: list[tuple[int, int, int]] = []
        push = heapq.heappush
        pop = heapq.heappop
        seq = 0
        horizon = self.horizon
        instances = self.instances
        admission = self.admission
        routing = self.routing
        adm_lat = self.admission_latency
        route_lat = self.routing_latency
        max_len = self.max_model_len
        rejected = 0
        too_long = 0
        executed = 0
        end_time = 0
        check = self.check_invariants
        checker = InvariantChecker(instances, log) if check else None
        inf = NEVER + 1
        provider = self.snapshots
        provider.reset()
        make_state = provider.state
        pending = provider.pending
        n_inst = len(instances)
        routing_name = type(routing).__name__
        hook = self.decision_hook
        # HOL-blocking samples: wait-queue length after each step's batch formation.
        track_queues = n_inst > 1
        queue_sums = [0] * n_inst
        generated = 0
        last_arrival = -1
        upcoming: Request | None = next(stream, None)
        next_sample = inf + 1 if sampler is None else 0
        next_progress = progress_every
        interrupted = False

        while True:
            if upcoming is not None:
                req = upcoming
                t_arr = req.arrival_time
            else:
                t_arr = inf
            t_ext = ext[0][0] if ext else inf
            t_step = steps[0][0] if steps else inf
            if next_sample <= t_arr and next_sample <= t_ext and next_sample <= t_step:
                # Time-series sample: every event before next_sample has run.
                if sampler is None or next_sample > horizon or next_sample >= inf:
                    next_sample = inf + 1
                elif t_arr < inf or t_ext < inf or t_step < inf:
                    next_sample = sampler(next_sample)
                    continue
                else:
                    next_sample = inf + 1
            if t_arr <= t_ext and t_arr <= t_step:
                if t_arr > horizon:
                    break
                if t_arr < last_arrival:
                    raise ValueError(
                        f"workload stream is not in arrival order: {req.request_id} "
                        f"arrives at {t_arr} µs after a request at {last_arrival} µs"
                    )
                last_arrival = t_arr
                upcoming = next(stream, None)
                generated += 1
                executed += 1
                if max_len and req.num_prompt_tokens + req.num_output_tokens > max_len:
                    req.state = RequestState.REJECTED
                    too_long += 1
                    continue
                push(ext, (t_arr + adm_lat, _ADMISSION, -1, seq, req))
                seq += 1
                continue
            if t_ext <= t_step:
                now = t_ext
                if now > horizon:
                    break
                _t, klass, inst_idx, _s, req = pop(ext)
                executed += 1
                if check:
                    checker.event(now, req)  # type: ignore[union-attr]
                if klass == _ENQUEUE:
                    if pending[inst_idx] > 0:
                        pending[inst_idx] -= 1
                    inst = instances[inst_idx]
                    if inst.enqueue(req, now):
                        push(steps, (now, inst_idx, seq))
                        seq += 1
                    if check:
                        checker.enqueued(inst, now, req)  # type: ignore[union-attr]
                    if now > end_time:
                        end_time = now
                elif klass == _ADMISSION:
                    state = make_state(now)
                    verdict = admission.admit(req, state)
                    if hook is not None:
                        if not isinstance(verdict, tuple):
                            verdict = AdmissionDecision(bool(verdict), "")
                        hook("admission", req, state, verdict)
                    if verdict[0] if isinstance(verdict, tuple) else verdict:
                        push(ext, (now + route_lat, _ROUTING, -1, seq, req))
                        seq += 1
                    else:
                        req.state = RequestState.REJECTED
                        rejected += 1
                else:  # routing
                    state = make_state(now)
                    decision = routing.route(req, state)
                    if isinstance(decision, RoutingDecision):
                        target = decision.target
                        if decision.priority:
                            req.priority = decision.priority
                    else:
                        target = decision
                    if target.__class__ is not int or not 0 <= target < n_inst:
                        target = target_index(target, n_inst, routing_name)
                    if hook is not None:
                        if not isinstance(decision, RoutingDecision):
                            decision = RoutingDecision(target)
                        hook("routing", req, state, decision)
                    pending[target] += 1
                    inst = instances[target]
                    req.handled_by = target
                    t_q = now + inst.latency.queueing_time(req)
                    push(ext, (t_q, _ENQUEUE, target, seq, req))
                    seq += 1
                continue
            if t_step == inf or t_step > horizon:
                break
            if executed >= next_progress:
                # Every progress_every events: the progress callback, and a stop request
                # (Ctrl-C, see runner.run_plan) ends the run here, between two events.
                next_progress = executed + progress_every
                if self.stop_requested:
                    interrupted = True
                    break
                if progress is not None:
                    progress(executed, t_step)
            now, inst_idx, _s = pop(steps)
            executed += 1
            inst = instances[inst_idx]
            t_limit = t_arr if t_arr < t_ext else t_ext
            if next_sample < t_limit:
                t_limit = next_sample
            if track_queues:
                steps_before = inst.stats.step_count
                nxt = inst.step(now, t_limit, horizon)
                # A step changes the wait queue only while forming its batch, and
                # fast-forwarded steps leave it alone: one sample per step executed.
                queue_sums[inst_idx] += len(inst.waiting) * (inst.stats.step_count - steps_before)
            else:
                nxt = inst.step(now, t_limit, horizon)
            if nxt is not None:
                push(steps, (nxt, inst_idx, seq))
                seq += 1
            step_end = inst.busy_until if inst.busy_until <= horizon else horizon
            if step_end > end_time:
                end_time = step_end
            if check:
                checker.step(  # type: ignore[union-attr]
                    inst_idx,
                    now,
                    nxt,
                    generated=generated,
                    rejected=rejected + too_long,
                    in_flight=len(ext),
                )

        for i, n in enumerate(pending):
            if n:
                _logger.debug(
                    "post-simulation: %s still has %d routed requests not yet queued",
                    instances[i].name,
                    n,
                )
        if rejected and not any(inst.stats.completed for inst in instances):
            _logger.warning(
                "[cluster] %d requests rejected by admission policy %s — no requests completed",
                rejected,
                type(admission).__name__,
            )
        in_flight: dict[int, int] = {}
        for inst in instances:
            inst.finalize()
            for r in inst.waiting:
                log.add(r)
            for r in inst.running:
                log.add(r)
            inst.log = None
        for event in ext:
            r = event[4]
            target = event[2] if event[1] == _ENQUEUE else -1
            in_flight[target] = in_flight.get(target, 0) + 1
            if target >= 0:
                log.add(r)
        if check and not interrupted:
            checker.finish(  # type: ignore[union-attr]
                end_time,
                generated=generated,
                rejected=rejected + too_long,
                unlogged_in_flight=in_flight.get(-1, 0),
            )
        return SimulationOutcome(
            requests=as_list,
            instances=instances,
            horizon=horizon,
            end_time=end_time,
            log=log,
            rejected=rejected,
            rejected_too_long=too_long,
            events_executed=executed,
            generated=generated,
            in_flight=in_flight,
            queue_length_sums=queue_sums,
            priority_policy=self.priority_policy,
            interrupted=interrupted,
        )


def _arrival_time(req: Request) -> int:
    return req.arrival_time
