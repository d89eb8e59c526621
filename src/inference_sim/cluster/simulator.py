"""The shared-clock event loop: arrival -> admission -> routing -> instance queue -> steps.

Events come from three sources, merged by time with ties broken in
:class:`~inference_sim.engine.events.EventClass` order (arrival, admission, routing,
enqueue, step): arrivals are read lazily from the arrival-ordered request stream (never
in a heap), cluster events (admission, routing, enqueue) sit in one heap ordered by
``(time, class, instance, sequence)``, and engine steps in a second heap ordered by
``(time, instance, sequence)``. Keeping steps apart lets an engine fast-forward up to the
next event of the other kinds. Each kind has one handler (``_on_arrival``,
``_on_admission``, ``_on_routing``, ``_on_enqueue``, ``_on_step``, plus ``_on_sample``
for time-series samples). Events later than the horizon never run.

Admission and routing decisions see a :class:`~inference_sim.policies.base.RouterState`
built by :class:`~inference_sim.cluster.snapshot.SnapshotProvider` at the decision's
tick. A request routed to an instance counts as pending there until its enqueue
event, so back-to-back decisions at one tick see each other's choices.
"""

from __future__ import annotations

import logging
import sys
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from heapq import heappop as _heappop
from heapq import heappush as _heappush
from importlib import metadata
from typing import Any

from inference_sim.cluster.snapshot import SnapshotProvider
from inference_sim.core.request import Request, RequestState
from inference_sim.engine.events import NEVER, EventClass
from inference_sim.engine.invariants import InvariantChecker
from inference_sim.instance.engine import Instance
from inference_sim.metrics.outcome import SimulationOutcome
from inference_sim.metrics.request_log import RequestLog
from inference_sim.policies.admission import ADMISSION, AlwaysAdmit
from inference_sim.policies.base import (
    AdmissionDecision,
    AdmissionPolicy,
    PolicyError,
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

_INF = NEVER + 1  # the loop's "no event" time
_ADMISSION = int(EventClass.ADMISSION)
_ROUTING = int(EventClass.ROUTING)
_ENQUEUE = int(EventClass.ENQUEUE)
#: Share of arrived requests refused or dropped from which a run that completed some
#: requests still warns: results over the survivors alone would mislead.
LOST_SHARE_WARNING = 0.10


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
        length_limit_flag: str = "--max-model-len",
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
        #: The option a user changes to raise ``max_model_len`` (named in the warning).
        self.length_limit_flag = length_limit_flag
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

    # --- the event loop ----------------------------------------------------------------
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

        Each iteration picks the earliest of: the next sample, the next arrival, the next
        cluster event (admission, routing, enqueue) and the next engine step, with ties
        in :class:`~inference_sim.engine.events.EventClass` order, and hands it to that
        kind's handler.
        """
        as_list = requests if isinstance(requests, list) else None
        if as_list is not None:
            stream: Iterator[Request] = iter(sorted(as_list, key=_arrival_time))
        else:
            stream = iter(requests)
        self._start(stream, sampler)
        horizon = self.horizon
        ext = self._ext
        steps = self._steps
        handlers = self._handlers
        checker = self._checker
        on_arrival = self._on_arrival
        on_step = self._on_step
        pop = _heappop
        inf = _INF
        executed = 0
        next_progress = progress_every
        interrupted = False
        while True:
            upcoming = self._upcoming
            t_arr = upcoming.arrival_time if upcoming is not None else inf
            t_ext = ext[0][0] if ext else inf
            t_step = steps[0][0] if steps else inf
            t_sample = self._next_sample
            if (
                t_sample <= t_arr
                and t_sample <= t_ext
                and t_sample <= t_step
                and self._on_sample(t_sample, t_arr < inf or t_ext < inf or t_step < inf)
            ):
                continue
            if t_arr <= t_ext and t_arr <= t_step:
                if t_arr > horizon:
                    break
                executed += 1
                on_arrival(upcoming, t_arr)  # type: ignore[arg-type]
            elif t_ext <= t_step:
                if t_ext > horizon:
                    break
                if executed >= next_progress:
                    # Seen here too: a run of cluster events alone (controller ticks,
                    # transfers) must not hold off Ctrl-C.
                    next_progress = executed + progress_every
                    if self._stop_or_report(progress, executed, t_ext):
                        interrupted = True
                        break
                # A cluster event: admission, routing or enqueue, each with its handler.
                now, klass, inst_idx, _s, req = pop(ext)
                executed += 1
                if klass == _ROUTING and now > self._end_time:
                    # The request reaches an instance now (the reference's instance
                    # Arrival event, stamped at the routing time): an executed event
                    # the run's duration counts, whichever simulator routes it.
                    self._end_time = now
                if checker is not None:
                    checker.event(now, req)
                handlers[klass](now, inst_idx, req)
            else:
                if t_step == inf or t_step > horizon:
                    break
                if executed >= next_progress:
                    next_progress = executed + progress_every
                    if self._stop_or_report(progress, executed, t_step):
                        interrupted = True
                        break
                executed += 1
                on_step(t_arr if t_arr < t_ext else t_ext)
        self._executed = executed
        return self._finish(as_list, interrupted)

    def _stop_or_report(self, progress: ProgressCallback | None, n: int, t: int) -> bool:
        """Every ``progress_every`` events: True when a stop was requested (Ctrl-C, see
        ``runner.run_plan``: the run ends here), else the progress callback is told."""
        if self.stop_requested:
            return True
        if progress is not None:
            progress(n, t)
        return False

    def _start(self, stream: Iterator[Request], sampler: Callable[[int], int] | None) -> None:
        """Fresh per-run state: the two heaps, counters, the request log, the checker.

        A simulator runs once (cluster spec 3): instances, policies (a token bucket's
        level, round-robin's counter, a router's prefix index) keep their state after a
        run, so a second run would start from the first one's end, not from t = 0.
        """
        if getattr(self, "_ran", False):
            raise RuntimeError(
                "a ClusterSimulator runs once: its instances and policies keep their state "
                "after run(); build a new simulator (inference_sim.runner) for another run"
            )
        self._ran = True
        self._log = log = RequestLog()
        for inst in self.instances:
            inst.log = log
        # Two heaps: cluster events (admission, routing, enqueue) and instance steps. A
        # step may run ahead on its own (fast-forward) only up to the next event of the
        # first kind, the next arrival or the next sample.
        self._ext: list[tuple[int, int, int, int, Request]] = []
        self._steps: list[tuple[int, int, int]] = []
        self._seq = 0
        self._rejected = 0
        self._too_long = 0
        # Per ITL group (load stage): arrivals and refusals, which the request log misses.
        self._arrived_by_group: dict[int, int] = {}
        self._rejected_by_group: dict[int, int] = {}
        self._too_long_by_group: dict[int, int] = {}
        self._executed = 0
        self._end_time = 0
        self._generated = 0
        self._last_arrival = -1
        self._stream = stream
        self._upcoming: Request | None = next(stream, None)
        self._sampler = sampler
        self._next_sample = _INF + 1 if sampler is None else 0
        self.snapshots.reset()
        self._checker = InvariantChecker(self.instances, log) if self.check_invariants else None
        # HOL-blocking samples: wait-queue length after each step's batch formation.
        self._queue_sums = [0] * len(self.instances)
        self._track_queues = len(self.instances) > 1
        self._handlers = {
            _ADMISSION: self._on_admission,
            _ROUTING: self._on_routing,
            _ENQUEUE: self._on_enqueue,
        }

    def _on_sample(self, t: int, more_events: bool) -> bool:
        """Time-series sample at ``t`` (every event before it has run). Returns True when
        the loop should look again (a sample was taken), False when sampling has ended."""
        sampler = self._sampler
        if sampler is not None and t <= self.horizon and t < _INF and more_events:
            self._next_sample = sampler(t)
            return True
        self._next_sample = _INF + 1
        return False

    def _on_arrival(self, req: Request, t: int) -> None:
        """A request arrives: check its length, then admission runs after its latency."""
        if t < self._last_arrival:
            raise ValueError(
                f"workload stream is not in arrival order: {req.request_id} "
                f"arrives at {t} µs after a request at {self._last_arrival} µs"
            )
        self._last_arrival = t
        self._upcoming = next(self._stream, None)
        self._generated += 1
        group = req.itl_group
        if group >= 0:
            self._arrived_by_group[group] = self._arrived_by_group.get(group, 0) + 1
        max_len = self.max_model_len
        if max_len and req.num_prompt_tokens + req.num_output_tokens > max_len:
            req.state = RequestState.REJECTED
            self._too_long += 1
            if group >= 0:
                self._too_long_by_group[group] = self._too_long_by_group.get(group, 0) + 1
            return
        _heappush(self._ext, (t + self.admission_latency, _ADMISSION, -1, self._seq, req))
        self._seq += 1

    def _on_admission(self, now: int, _inst_idx: int, req: Request) -> None:
        """The admission policy decides; an admitted request is routed after its latency."""
        state = self.snapshots.state(now)
        verdict = self.admission.admit(req, state)
        cls = verdict.__class__
        if cls is not bool and not (
            cls is AdmissionDecision
            and verdict[0].__class__ is bool
            and verdict[1].__class__ is str
        ):
            verdict = self._checked_verdict(verdict)
        if self.decision_hook is not None:
            if not isinstance(verdict, tuple):
                verdict = AdmissionDecision(bool(verdict), "")
            self.decision_hook("admission", req, state, verdict)
        if verdict[0] if isinstance(verdict, tuple) else verdict:
            _heappush(self._ext, (now + self.routing_latency, _ROUTING, -1, self._seq, req))
            self._seq += 1
        else:
            req.state = RequestState.REJECTED
            self._rejected += 1
            group = req.itl_group
            if group >= 0:
                self._rejected_by_group[group] = self._rejected_by_group.get(group, 0) + 1

    def _checked_verdict(self, verdict: Any) -> bool | AdmissionDecision:
        """A plug-in's verdict as a bool or an AdmissionDecision, or a PolicyError.

        Anything else used to be read by truth value or by its first element: a tuple
        ``("no", "x")`` admitted everything and ``()`` failed with an IndexError. Numpy
        bools (a comparison of numpy values) are bools here.
        """

        def is_bool(v: Any) -> bool:
            return v.__class__ is bool or (
                getattr(getattr(v, "dtype", None), "kind", "") == "b"
                and getattr(v, "shape", None) == ()
            )

        if isinstance(verdict, tuple):
            if verdict and is_bool(verdict[0]):
                if len(verdict) == 1:
                    return AdmissionDecision(bool(verdict[0]), "")
                if isinstance(verdict[1], str):
                    return AdmissionDecision(bool(verdict[0]), verdict[1])
        elif is_bool(verdict):
            return bool(verdict)
        raise PolicyError(
            f"admission policy {type(self.admission).__name__} returned {verdict!r:.80}; "
            "expected True/False, (admitted, reason) or an AdmissionDecision"
        )

    def _on_routing(self, now: int, _inst_idx: int, req: Request) -> None:
        """The routing policy picks an instance; the request is pending there until its
        enqueue event (after the instance's queueing time)."""
        state = self.snapshots.state(now)
        decision = self.routing.route(req, state)
        if isinstance(decision, RoutingDecision):
            target = decision.target
            if decision.priority:
                req.priority = decision.priority
        else:
            target = decision
        n_inst = len(self.instances)
        if target.__class__ is not int or not 0 <= target < n_inst:
            target = target_index(target, n_inst, type(self.routing).__name__)
        if self.decision_hook is not None:
            if not isinstance(decision, RoutingDecision):
                decision = RoutingDecision(target)
            self.decision_hook("routing", req, state, decision)
        self.snapshots.pending[target] += 1
        inst = self.instances[target]
        req.handled_by = target
        t_enqueue = now + inst.latency.queueing_time(req)
        _heappush(self._ext, (t_enqueue, _ENQUEUE, target, self._seq, req))
        self._seq += 1

    def _on_enqueue(self, now: int, inst_idx: int, req: Request) -> None:
        """The request enters the instance's wait queue; an idle instance starts a step."""
        pending = self.snapshots.pending
        if pending[inst_idx] > 0:
            pending[inst_idx] -= 1
        inst = self.instances[inst_idx]
        if inst.enqueue(req, now):
            # An idle instance starts a step now, or when its last step ends (the state
            # that step leaves is applied at its start, its GPU time runs on).
            start = inst.busy_until if inst.busy_until > now else now
            _heappush(self._steps, (start, inst_idx, self._seq))
            self._seq += 1
        if self._checker is not None:
            self._checker.enqueued(inst, now, req)
        if now > self._end_time:
            self._end_time = now

    def _on_step(self, t_next_outside: int) -> None:
        """Run the next engine step; the engine may run ahead until ``t_next_outside``
        (the next arrival or cluster event), the next sample or the horizon."""
        now, inst_idx, _s = _heappop(self._steps)
        inst = self.instances[inst_idx]
        t_limit = t_next_outside
        if self._next_sample < t_limit:
            t_limit = self._next_sample
        horizon = self.horizon
        steps_before = inst.stats.step_count
        nxt = inst.step(now, t_limit, horizon)
        if self._track_queues:
            # A step changes the wait queue only while forming its batch, and
            # fast-forwarded steps leave it alone: one sample per step executed.
            self._queue_sums[inst_idx] += len(inst.waiting) * (inst.stats.step_count - steps_before)
        if nxt is not None:
            _heappush(self._steps, (nxt, inst_idx, self._seq))
            self._seq += 1
        # The run ends at the last event executed (the reference's SimEndedTime; docs/
        # engine.md): the end of the last step, or, for a step the horizon cuts (its end
        # never runs), that step's start (the instance's clock), never the horizon itself.
        step_end = inst.busy_until if inst.busy_until <= horizon else inst.clock
        if step_end > self._end_time:
            self._end_time = step_end
        if self._checker is not None:
            self._checker.step(
                inst_idx,
                now,
                nxt,
                generated=self._generated,
                rejected=self._rejected + self._too_long,
                in_flight=len(self._ext),
            )

    def _loss_parts(self, dropped: int) -> list[str]:
        """One phrase per reason requests were lost (refused or dropped), with its count
        and the option that changes it, for the warnings below."""
        parts = []
        if dropped:
            parts.append(
                f"{dropped} dropped_unservable (their KV needs more blocks than an instance "
                "has: raise --total-kv-blocks or shorten the requests)"
            )
        if self._too_long:
            parts.append(
                f"{self._too_long} rejected_too_long (prompt + output over "
                f"{self.length_limit_flag} {self.max_model_len}: raise it or shorten the "
                "requests)"
            )
        if self._rejected:
            parts.append(
                f"{self._rejected} rejected_requests by admission policy "
                f'"{admission_policy_name(self.admission)}" (change --admission-policy or its '
                "options)"
            )
        return parts

    def _warn_nothing_completed(self, interrupted: bool) -> None:
        """Say why a run completed no request, naming the cause the counters show: an
        empty run, admission rejections, or requests that can never be served (dropped
        as unservable, refused as too long); only otherwise a short horizon. A run
        stopped early (Ctrl-C) says so itself: only rejections are told then. The
        admission policy is named as the user gives it (``reject-all``, a plug-in's
        ``module:Class``), as the reference's warning does (cluster spec 4.2), not by
        its Python class."""
        if self._rejected:
            _logger.warning(
                '[cluster] %d requests rejected by admission policy "%s" — no requests completed',
                self._rejected,
                admission_policy_name(self.admission),
            )
            return
        if interrupted:
            return
        if not self._generated:
            why, hint = "the workload has no requests", ""
            if self.horizon < NEVER:
                why = f"no request arrived before the horizon ({self.horizon / 1e6:g} s)"
                hint = "; lengthen --horizon"
            _logger.warning(
                "[cluster] %s — the run injected nothing: its results are empty%s", why, hint
            )
            return
        dropped = sum(inst.stats.dropped_unservable for inst in self.instances)
        parts = self._loss_parts(dropped)
        if dropped + self._too_long >= self._generated:  # none could have been served
            _logger.warning(
                "[cluster] no requests completed: all %d generated were dropped or refused: %s",
                self._generated,
                "; ".join(parts),
            )
            return
        _logger.warning(
            "[cluster] no requests completed — horizon may be too short or workload too small%s",
            f" ({'; '.join(parts)})" if parts else "",
        )

    def _warn_lost_requests(self) -> None:
        """A run that completed requests but refused or dropped a large share
        (:data:`LOST_SHARE_WARNING`) of those that arrived warns once, with the count per
        reason and the option to change: its latencies and throughput describe the
        survivors only, which a summary read alone does not show (the anomaly block
        counts admission rejections and drops, not requests over --max-model-len)."""
        dropped = sum(inst.stats.dropped_unservable for inst in self.instances)
        lost = self._rejected + self._too_long + dropped
        arrived = self._generated
        if not arrived or lost < LOST_SHARE_WARNING * arrived:
            return
        _logger.warning(
            "[cluster] %d of %d arrived requests (%.1f%%) were refused or dropped, so the "
            "results cover the rest only: %s",
            lost,
            arrived,
            100.0 * lost / arrived,
            "; ".join(self._loss_parts(dropped)),
        )

    def _finish(self, as_list: list[Request] | None, interrupted: bool) -> SimulationOutcome:
        """End of run: write out engines' state, log what is still in flight, check."""
        instances = self.instances
        log = self._log
        for i, n in enumerate(self.snapshots.pending):
            if n:
                _logger.debug(
                    "post-simulation: %s still has %d routed requests not yet queued",
                    instances[i].name,
                    n,
                )
        if not any(inst.stats.completed for inst in instances):
            self._warn_nothing_completed(interrupted)
        else:
            self._warn_lost_requests()
        in_flight: dict[int, int] = {}
        for inst in instances:
            inst.finalize()
            for r in inst.waiting:
                log.add(r)
            for r in inst.running:
                log.add(r)
            inst.log = None
        for event in self._ext:
            # Routed, not yet queued: counted on its target instance. Still awaiting its
            # admission or routing decision (target -1): counted in the cluster's
            # still_queued only (it belongs to no instance yet) and recorded without
            # handled_by, so that every request the summary counts has a record.
            target = event[2] if event[1] == _ENQUEUE else -1
            in_flight[target] = in_flight.get(target, 0) + 1
            log.add(event[4])
        if self._checker is not None and not interrupted:
            self._checker.finish(
                self._end_time,
                generated=self._generated,
                rejected=self._rejected + self._too_long,
                unlogged_in_flight=0,
            )
        outcome = SimulationOutcome(
            requests=as_list,
            instances=instances,
            horizon=self.horizon,
            end_time=self._end_time,
            log=log,
            rejected=self._rejected,
            rejected_too_long=self._too_long,
            events_executed=self._executed,
            generated=self._generated,
            in_flight=in_flight,
            queue_length_sums=self._queue_sums,
            priority_policy=self.priority_policy,
            interrupted=interrupted,
            arrived_by_group=self._arrived_by_group,
            rejected_by_group=self._rejected_by_group,
            too_long_by_group=self._too_long_by_group,
        )
        self._stream = iter(())  # drop the workload iterator (and what it holds)
        return outcome


def _arrival_time(req: Request) -> int:
    return req.arrival_time


def admission_policy_name(policy: object) -> str:
    """The name a user gives for the admission policy ``policy`` in --admission-policy:
    its registered name (a built-in such as ``reject-all``, or a plug-in registered with
    ``ADMISSION.register``), an installed entry point's name, else ``module:Class`` (for
    a ``path/to/file.py:Class`` plug-in, the file's path). Warnings name policies so
    (cluster spec 4.2 prints the configured name), not by their Python class.

    The simulator is handed the policy object, not the option, so the name is found
    from the object: a name whose factory is the policy's class, or a factory function
    annotated to return it (``token-bucket``).
    """
    cls = type(policy)

    def builds(factory: object) -> bool:
        if factory is cls:
            return True
        if isinstance(factory, type) or not callable(factory):
            return False
        try:
            return typing.get_type_hints(factory).get("return") is cls
        except Exception:  # unresolvable annotations: not this policy's factory
            return False

    for name in ADMISSION.names():
        if builds(ADMISSION.lookup(name)):
            return name
    spec = f"{cls.__module__}:{cls.__qualname__}"
    try:
        entry_points = list(metadata.entry_points(group=ADMISSION.entry_point_group))
    except Exception:  # pragma: no cover - broken installation metadata
        entry_points = []
    for ep in entry_points:
        if ep.value.replace(" ", "") == spec:
            return ep.name
        # Only entry points whose module is already imported (this run's): loading
        # another could run arbitrary code, in a warning.
        if ep.module in sys.modules:
            try:
                if builds(ep.load()):
                    return ep.name
            except Exception:  # a plug-in that fails to load is not this one
                continue
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if cls.__module__.startswith("inference_sim_plugin_") and path:
        return f"{path}:{cls.__qualname__}"  # loaded from a file (core.plugins)
    return spec
