"""The shared-clock event loop: arrival -> admission -> routing -> instance queue -> steps.

One heap orders every event by ``(time, class, instance, sequence)`` (see
``engine.events``). Arrivals are fed lazily from the arrival-ordered request list,
so the heap holds only in-flight work. Events later than the horizon never run.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from inference_sim.engine.events import NEVER, EventClass
from inference_sim.instance.engine import Instance
from inference_sim.instance.request import Request, RequestState
from inference_sim.metrics.request_log import RequestLog
from inference_sim.policies.admission import AdmissionPolicy, AlwaysAdmit
from inference_sim.policies.routing import RoundRobin, RoutingPolicy

ProgressCallback = Callable[[int, int], None]

_ADMISSION = int(EventClass.ADMISSION)
_ROUTING = int(EventClass.ROUTING)
_ENQUEUE = int(EventClass.ENQUEUE)


@dataclass
class SimulationOutcome:
    """Everything a run leaves behind for metrics aggregation.

    ``log`` holds one row per request that reached an instance (finished or not);
    ``requests`` is the caller's list when one was given (None for a stream).
    ``in_flight`` counts requests admitted or routed but not yet in a wait queue when
    the horizon was reached, per target instance (-1: not yet routed).
    """

    requests: list[Request] | None
    instances: list[Instance]
    horizon: int
    end_time: int
    log: RequestLog
    rejected: int = 0
    rejected_too_long: int = 0
    events_executed: int = 0
    generated: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)


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
        self.horizon = horizon
        self.max_model_len = max_model_len
        self.check_invariants = check_invariants

    def run(
        self,
        requests: Iterable[Request],
        *,
        progress: ProgressCallback | None = None,
        progress_every: int = 200_000,
    ) -> SimulationOutcome:
        """Simulate ``requests``.

        A list may be in any order (it is served by arrival time, then list order); any
        other iterable is consumed lazily and must yield requests in arrival order.
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
        inf = NEVER + 1
        generated = 0
        last_arrival = -1
        upcoming: Request | None = next(stream, None)

        while True:
            if upcoming is not None:
                req = upcoming
                t_arr = req.arrival_time
            else:
                t_arr = inf
            t_ext = ext[0][0] if ext else inf
            t_step = steps[0][0] if steps else inf
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
                if klass == _ENQUEUE:
                    inst = instances[inst_idx]
                    if inst.enqueue(req, now):
                        push(steps, (now, inst_idx, seq))
                        seq += 1
                    if now > end_time:
                        end_time = now
                elif klass == _ADMISSION:
                    if admission.admit(req, now):
                        push(ext, (now + route_lat, _ROUTING, -1, seq, req))
                        seq += 1
                    else:
                        req.state = RequestState.REJECTED
                        rejected += 1
                else:  # routing
                    target = routing.route(req, instances, now)
                    inst = instances[target]
                    req.handled_by = target
                    t_q = now + inst.latency.queueing_time(req)
                    push(ext, (t_q, _ENQUEUE, target, seq, req))
                    seq += 1
                continue
            if t_step == inf or t_step > horizon:
                break
            now, inst_idx, _s = pop(steps)
            executed += 1
            if progress is not None and executed % progress_every == 0:
                progress(executed, now)
            inst = instances[inst_idx]
            t_limit = t_arr if t_arr < t_ext else t_ext
            nxt = inst.step(now, t_limit, horizon)
            if nxt is not None:
                push(steps, (nxt, inst_idx, seq))
                seq += 1
            step_end = inst.busy_until if inst.busy_until <= horizon else horizon
            if step_end > end_time:
                end_time = step_end
            if check:
                inst.kv.check_invariants()

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
        )


def _arrival_time(req: Request) -> int:
    return req.arrival_time
