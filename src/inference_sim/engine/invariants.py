"""Runtime invariant checks of ``--check-invariants`` (``ClusterSimulator(check_invariants=True)``).

The simulator calls an :class:`InvariantChecker` from its event loop only when checking
is on (one boolean test per event otherwise). The first violation stops the run with an
:class:`InvariantViolation`: one line naming the simulated time, the instance and the
request where the simulator knows them, and what was violated.

Checked during the run:

* **clock monotonicity** — events run in non-decreasing time, each instance's steps start
  in non-decreasing time, and no step ends before it starts;
* **request conservation** — every request generated so far is in exactly one place:
  rejected (admission or ``--max-model-len``), on its way to an instance, waiting,
  running, finished or dropped as unservable;
* **KV block conservation** — after each step the instance's block tables hold exactly
  the referenced blocks, each with its reference count, and only running requests hold
  blocks; the full scan of the block pool (free queue, cache index, CPU tier) runs every
  :attr:`InvariantChecker.full_kv_every` steps of an instance and at the end of the run;
* **causality** — every request written to the results has arrival <= first scheduled
  <= first token <= completion;
* **work conservation** — an instance with waiting or running requests has its next step
  scheduled, and an empty one has none.

With LoRA on, the LoRA stepper (``instance.lora``) checks two more before every step,
whether or not ``--check-invariants`` is given: at most ``max_loras`` distinct adapters
in the batch, and every scheduled request's adapter resident on the GPU (docs/lora.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference_sim.core.request import Request


class InvariantViolation(AssertionError):
    """An invariant of the simulation does not hold (a simulator bug, not bad input)."""

    def __init__(
        self, what: str, *, time: int, instance: str = "", request: Request | None = None
    ) -> None:
        where = f"t={time} µs"
        if instance:
            where += f", {instance}"
        if request is not None:
            where += f", {request.request_id}"
        super().__init__(f"invariant violated at {where}: {what}")
        self.time = time
        self.instance = instance
        self.request = request


class InvariantChecker:
    """Checks the invariants of one run; the simulator calls it at each event."""

    #: Steps of one instance between two full scans of its block pool (O(pool size)).
    full_kv_every = 512

    def __init__(self, instances: Sequence[Any], log: Any) -> None:
        self.instances = list(instances)
        self.log = log
        self.now = 0
        self.logged = 0  # rows of the request log already checked for causality
        self.last_start = [0] * len(self.instances)
        self.last_end = [0] * len(self.instances)  # one GPU: steps never overlap
        self.steps = [0] * len(self.instances)

    # --- events --------------------------------------------------------------------
    def event(self, now: int, req: Request | None = None, instance: str = "") -> None:
        """An event at ``now`` is about to run (clock monotonicity)."""
        if now < self.now:
            raise InvariantViolation(
                f"the clock went back from {self.now} µs", time=now, instance=instance, request=req
            )
        self.now = now

    def enqueued(self, inst: Any, now: int, req: Request) -> None:
        """``req`` reached ``inst``'s wait queue (or was dropped as unservable)."""
        if (inst.waiting or inst.running) and not inst.step_pending and not self.may_idle(inst):
            raise InvariantViolation(
                "work conservation: the instance has requests but no step scheduled",
                time=now,
                instance=inst.name,
                request=req,
            )

    def step(
        self,
        index: int,
        now: int,
        nxt: int | None,
        *,
        generated: int,
        rejected: int,
        in_flight: int,
    ) -> None:
        """Instance ``index`` ran a step starting at ``now``; ``nxt`` is its next step."""
        inst = self.instances[index]
        name = inst.name
        self.event(now, instance=name)
        if now < self.last_start[index]:
            raise InvariantViolation(
                f"step starts before the instance's previous step ({self.last_start[index]} µs)",
                time=now,
                instance=name,
            )
        self.last_start[index] = now
        if now < self.last_end[index]:
            raise InvariantViolation(
                f"step starts before the previous step ends ({self.last_end[index]} µs)",
                time=now,
                instance=name,
            )
        self.last_end[index] = inst.busy_until
        if inst.busy_until < now:
            raise InvariantViolation(
                f"step ends at {inst.busy_until} µs, before it starts", time=now, instance=name
            )
        busy = bool(inst.waiting or inst.running)
        if busy and (nxt is None or not inst.step_pending) and not self.may_idle(inst):
            req = inst.running[0] if inst.running else inst.waiting[0]
            raise InvariantViolation(
                "work conservation: the instance has requests but no next step",
                time=now,
                instance=name,
                request=req,
            )
        if not busy and (nxt is not None or inst.step_pending):
            raise InvariantViolation(
                "work conservation: an empty instance scheduled another step",
                time=now,
                instance=name,
            )
        if nxt is not None and nxt < now:
            raise InvariantViolation(
                f"the next step is scheduled in the past ({nxt} µs)", time=now, instance=name
            )
        self._kv(inst, now)
        self.steps[index] += 1
        if self.steps[index] % self.full_kv_every == 0:
            self._full_kv(inst, now)
        self._requests(now, generated, rejected, in_flight)
        self._causality(now)

    def finish(self, now: int, *, generated: int, rejected: int, unlogged_in_flight: int) -> None:
        """End of the run, after every remaining request was written to the log."""
        for inst in self.instances:
            self._full_kv(inst, now)
        self._causality(now)
        dropped = sum(inst.stats.dropped_unservable for inst in self.instances)
        accounted = rejected + unlogged_in_flight + dropped + len(self.log)
        if accounted != generated:
            raise InvariantViolation(
                f"request conservation: {generated} generated, but {accounted} accounted for "
                f"at the end ({len(self.log)} in the results, {dropped} dropped, {rejected} "
                f"rejected, {unlogged_in_flight} not yet routed)",
                time=now,
            )

    # --- hooks for clusters that hold requests outside every queue (P/D) ------------
    def may_idle(self, inst: Any) -> bool:
        """True when ``inst`` may wait with queued work (for KV held by a transfer)."""
        return False

    def held_requests(self, inst: Any) -> list[Request]:
        """Requests holding KV on ``inst`` while in neither of its queues."""
        return []

    def in_transit(self) -> int:
        """Requests between two instances (in no queue, not finished)."""
        return 0

    # --- the checks ----------------------------------------------------------------
    def _requests(self, now: int, generated: int, rejected: int, in_flight: int) -> None:
        held = rejected + in_flight + self.in_transit()
        for inst in self.instances:
            st = inst.stats
            held += len(inst.waiting) + len(inst.running) + st.completed + st.dropped_unservable
        if held != generated:
            raise InvariantViolation(
                f"request conservation: {generated} generated, {held} accounted for "
                "(rejected + in flight + waiting + running + finished + dropped)",
                time=now,
            )

    def _kv(self, inst: Any, now: int) -> None:
        """Block tables against reference counts (cost: the blocks in use)."""
        kv = inst.kv
        pool = kv.pool
        refs: dict[int, int] = {}
        # Blocks the fast stepper opened in bulk for decoders and not yet handed out
        # (KVCacheManager.reserve_lazy) are held too.
        for table in (*kv.tables.values(), kv.lazy_blocks):
            for b in table:
                refs[b] = refs.get(b, 0) + 1
        ref_cnt = pool.ref_cnt
        for b, n in refs.items():
            if ref_cnt[b] != n:
                raise InvariantViolation(
                    f"KV block conservation: block {b} has {ref_cnt[b]} references, "
                    f"block tables hold it {n} times",
                    time=now,
                    instance=inst.name,
                )
        if len(refs) != pool.num_used:
            raise InvariantViolation(
                f"KV block conservation: {pool.num_used} blocks in use, block tables hold "
                f"{len(refs)}",
                time=now,
                instance=inst.name,
            )
        extra = self.held_requests(inst)
        if len(kv.tables) != len(inst.running) + len(extra):
            running = {r.index for r in inst.running} | {r.index for r in extra}
            for req in inst.waiting:
                if req.index in kv.tables:
                    raise InvariantViolation(
                        "KV block conservation: a waiting request holds blocks",
                        time=now,
                        instance=inst.name,
                        request=req,
                    )
            stray = sorted(set(kv.tables) - running)
            raise InvariantViolation(
                f"KV block conservation: {len(kv.tables)} block tables for "
                f"{len(inst.running)} running requests (tables of request indices "
                f"{stray[:5]} belong to no running request)",
                time=now,
                instance=inst.name,
            )

    def _full_kv(self, inst: Any, now: int) -> None:
        try:
            inst.kv.check_invariants()
        except AssertionError as exc:
            raise InvariantViolation(
                f"KV block conservation: {exc}", time=now, instance=inst.name
            ) from None

    def _causality(self, now: int) -> None:
        """New rows of the log: arrival <= scheduled <= first token <= completion."""
        log = self.log
        n = len(log)
        for row in range(self.logged, n):
            sched = log.sched_delay[row]
            ttft = log.ttft[row]
            e2e = log.e2e[row]
            problem = ""
            if sched < -1:  # -1: never scheduled
                problem = f"scheduled {-sched} µs before it arrived"
            elif ttft >= 0 and (sched < 0 or ttft < sched):
                problem = f"first token (+{ttft} µs) before it was scheduled (+{sched} µs)"
            elif log.finished[row] and (ttft < 0 or e2e < ttft):
                problem = f"completed (+{e2e} µs) before its first token (+{ttft} µs)"
            if problem:
                inst = log.instance[row]
                name = self.instances[inst].name if 0 <= inst < len(self.instances) else ""
                raise InvariantViolation(
                    f"causality: request_{log.index[row]} {problem}",
                    time=now,
                    instance=name,
                )
        self.logged = n
