"""Prefill/decode disaggregation on the shared clock (docs/disaggregation.md).

Semantics of llm-d with vLLM's NIXL connector:

1. routing picks the **decode** instance first (decode-capable instances, its own
   policy and scorers); the decider (``never``, ``always``, ``prefix-threshold``) says
   whether to disaggregate; if so a **prefill** instance is picked (its own policy);
2. the prefill instance computes the prompt (the first token exists there) and holds
   the request's KV; the decode instance allocates KV for the prompt (waiting, counted,
   when it has no room) and pulls only the blocks missing from its prefix cache;
3. a transfer takes ``base latency + bytes / bandwidth`` where concurrent transfers on
   one link (the prefill instance's NIC) share its bandwidth equally, recomputed at
   every start and end (processor sharing); ``bytes`` is what the busiest GPU's NIC
   carries when the pools' TPs differ (:meth:`PDClusterSimulator._link_bytes`); when it
   ends the prefill side frees the blocks into its prefix cache and the decode side
   computes the first token.

The handlers extend :class:`~inference_sim.cluster.simulator.ClusterSimulator` with
cluster-event kinds of their own (handoff, link update, transfer join, decode-KV retry,
deadlock check); with P/D off the plain simulator runs, untouched.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inference_sim.cluster.autoscale import (
    LEFT,
    LOADED,
    TICK,
    ExtraEvents,
    PoolChoice,
    more_work,
    replica_left,
    route_among,
    run_over,
)
from inference_sim.cluster.scaler import AutoscaleConfig, PoolScaler
from inference_sim.cluster.snapshot import SnapshotProvider
from inference_sim.core.request import Request, RequestState
from inference_sim.engine.invariants import InvariantChecker, InvariantViolation
from inference_sim.instance.pd import PREFILL_ONLY, PDInstance
from inference_sim.metrics.outcome import SimulationOutcome
from inference_sim.policies.base import RoutingPolicy

DECIDERS = ("never", "always", "prefix-threshold")

_HANDOFF = 5  # a prompt finished on its prefill instance
_LINK = 6  # a link's next transfer completion (stale ones are ignored)
_JOIN = 7  # a transfer's base latency is over: it starts using the link
_RETRY = 8  # a decode instance freed KV: retry the transfers waiting for room
# (TICK = 9, LOADED = 10 and LEFT = 12 are the autoscaling controller's)
_UNBLOCK = 11  # a dual-role step ended: check the instances waiting for its slots
_EPS_BYTES = 1e-3


@dataclass(slots=True)
class Transfer:
    """One request's KV pull from its prefill instance to its decode instance."""

    req: Request
    prefill: int
    decode: int
    blocks: int
    nbytes: float  # bytes over one link (each of ``links`` parallel links carries as much)
    start: int = -1
    remaining: float = 0.0
    links: int = 1  # GPU pairs moving it in parallel: nbytes x links cross the network


@dataclass(slots=True)
class Link:
    """A prefill instance's outgoing link: processor sharing among active transfers."""

    bandwidth: float  # bytes per µs
    active: list[Transfer] = field(default_factory=list)
    last: int = 0
    next_time: int = -1
    busy_us: int = 0  # time with at least one active transfer (the invariant's budget)
    done_bytes: float = 0.0  # bytes of the transfers that completed on this link
    transfers: int = 0  # transfers completed on this link

    def advance(self, now: int) -> None:
        """Drain every active transfer by its equal share since the last update."""
        if self.active and now > self.last:
            self.busy_us += now - self.last
            drained = (now - self.last) * self.bandwidth / len(self.active)
            for tr in self.active:
                tr.remaining -= drained
        self.last = now

    def completion_time(self, now: int) -> int:
        """When the smallest active transfer ends at today's shares (-1: none)."""
        if not self.active:
            return -1
        smallest = min(tr.remaining for tr in self.active)
        return now + max(0, math.ceil(smallest * len(self.active) / self.bandwidth - 1e-9))


@dataclass
class PDStats:
    """Run-wide disaggregation counters (the results file's ``pd`` section)."""

    disaggregated: int = 0
    colocated: int = 0
    transfers_done: int = 0
    bytes_moved: float = 0.0
    blocks_moved: int = 0
    blocks_reused: int = 0
    peak_concurrent: int = 0
    waited_for_decode_kv: int = 0
    decoded_at_prefill: int = 0  # dual-role prefill side decoded it (a wait cycle broken)
    dropped_unservable: int = 0
    transfer_us: list[int] = field(default_factory=list)
    # request index -> per-request fields of the records
    per_request: dict[int, dict[str, Any]] = field(default_factory=dict)


class _PDChecker(InvariantChecker):
    """The invariant checker, told which requests the P/D handlers hold."""

    def __init__(self, sim: PDClusterSimulator) -> None:
        super().__init__(sim.instances, sim._log)
        self.sim = sim

    def may_idle(self, inst: Any) -> bool:
        return bool(inst.held) and not inst.running

    def held_requests(self, inst: Any) -> list[Request]:
        return list(self.sim.held_reqs[inst.index].values())

    def in_transit(self) -> int:
        # From its handoff to the end of its transfer a request is held by its prefill
        # instance (and, once its KV is reserved, by its decode instance too).
        # The simulator counts every cluster event as a request in flight: P/D events
        # (handoff, link, join, retry) are not, so they are taken off here.
        sim = self.sim
        limbo = sum(len(sim.held_reqs[i]) for i in sim._prefill_all) - sim._both
        # Requests whose KV arrived, waiting for a running slot on a decode-only instance
        # (on a dual-role one they are in its held_reqs above).
        limbo += sum(len(q) for d, q in enumerate(sim.join_wait) if d not in sim._prefill_set)
        return limbo - sum(1 for ev in sim._ext if ev[1] >= _HANDOFF)


class PDClusterSimulator(ExtraEvents):
    """A cluster with prefill, decode and dual-role instances."""

    def __init__(
        self,
        instances: Sequence[PDInstance],
        *,
        decode_routing: RoutingPolicy,
        prefill_routing: RoutingPolicy,
        decider: str = "always",
        prefix_threshold: int = 0,
        bandwidth_gbps: float = 50.0,
        base_latency_us: int = 0,
        block_bytes: Sequence[float] = (),
        ranks: Sequence[int] = (),
        autoscale: Mapping[str, tuple[AutoscaleConfig, int]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(instances, routing=decode_routing, **kw)
        if decider not in DECIDERS:
            raise ValueError(f"--pd-decider must be one of {', '.join(DECIDERS)}, got {decider!r}")
        self.pd_instances: list[PDInstance] = list(instances)
        self.decode_idx = [i.index for i in self.pd_instances if i.role != "prefill"]
        self.prefill_idx = [i.index for i in self.pd_instances if i.role != "decode"]
        self._prefill_all = list(self.prefill_idx)  # every prefill-capable instance
        self._prefill_set = frozenset(self._prefill_all)
        if not self.decode_idx or not self.prefill_idx:
            raise ValueError("a disaggregated cluster needs decode and prefill capacity")
        self.prefill_routing = prefill_routing
        self.decider = decider
        self.prefix_threshold = prefix_threshold
        self.bandwidth = bandwidth_gbps * 1e3  # GB/s -> bytes per µs
        self.base_latency = base_latency_us
        self.block_bytes = list(block_bytes) or [0.0] * len(self.pd_instances)
        # GPUs (TP ranks) of each instance: each moves its shard of a block over its own
        # link; with different TPs on the two sides see _link_bytes.
        self.ranks = list(ranks) or [1] * len(self.pd_instances)
        self._refresh = kw.get("snapshot_refresh_interval", 0)
        # Autoscaled pools (docs/autoscaling.md): pool name -> its controller.
        self.scalers: dict[str, PoolScaler] = {}
        for pool, (cfg, initial) in (autoscale or {}).items():
            members = [i.index for i in self.pd_instances if i.role == pool]
            self.scalers[pool] = PoolScaler(
                members,
                self.instances,
                cfg,
                initial,
                schedule_load=self._schedule_load,
                schedule_leave=self._schedule_leave,
                on_change=self._rebuild_pools,
                busy=self._busy,
                check=self.check_invariants,
            )
            self.scalers[pool].ttft_all = True
            self.scalers[pool].extra_waiting = self._decode_waiting
            self.scalers[pool].on_leave = lambda i: replica_left(
                self.instances[i], (self.routing, self.prefill_routing)
            )
        self._rebuild_pools()
        for inst in self.pd_instances:
            inst.on_handoff = self._handoff_hook(inst)
            inst.on_step_end = self._step_end_hook

    # --- per-run state -------------------------------------------------------------
    def _start(self, stream: Any, sampler: Any) -> None:
        super()._start(stream, sampler)
        self._handlers[_HANDOFF] = self._on_handoff
        self._handlers[_LINK] = self._on_link
        self._handlers[_JOIN] = self._on_join
        self._handlers[_RETRY] = self._on_retry
        self._handlers[_UNBLOCK] = self._on_unblock
        n = len(self.instances)
        self.assigned = [0] * n  # requests that will move to this decode instance
        self.links = [Link(self.bandwidth) for _ in range(n)]
        self.kv_wait: list[deque[Request]] = [deque() for _ in range(n)]
        # KV arrived, no running slot yet (the batch is at max_num_seqs): joins first
        self.join_wait: list[deque[Request]] = [deque() for _ in range(n)]
        self.decode_of: dict[int, int] = {}  # request index -> decode instance
        self.transfers: dict[int, Transfer] = {}
        self.in_transfer = 0
        self.pd = PDStats()
        # instance -> requests holding KV there while in no queue
        self.held_reqs: list[dict[int, Request]] = [{} for _ in range(n)]
        self._both = 0  # requests held on a dual-role decode side (counted twice above)
        # request index -> end of the prefill step that handed it off, until its handoff
        # event (the second hop: the prefill server's response, the decode server's intake)
        self._prefilled_at: dict[int, int] = {}
        self._retries = [0] * n  # _RETRY events pending per decode instance
        self._dual = [i.index for i in self.pd_instances if i.role == "both"]
        if self.check_invariants:
            self._checker = _PDChecker(self)
        for inst in self.pd_instances:
            inst.held = inst.handed_off = inst.accepted = 0
        for k, scaler in enumerate(self.scalers.values()):
            scaler.reset()
            self._push_ext(scaler.cfg.interval, TICK, k, None)  # type: ignore[arg-type]
        self._handlers[TICK] = self._on_tick
        self._handlers[LOADED] = self._on_loaded
        self._handlers[LEFT] = self._on_left
        self._rebuild_pools()

    # --- autoscaled pools --------------------------------------------------------------
    def _rebuild_pools(self) -> None:
        """Routable instances of each side: ready members of an autoscaled pool, all the
        others, and the dual-role ones."""
        pools: dict[str, list[int]] = {"prefill": [], "decode": []}
        for inst in self.pd_instances:
            scaler = self.scalers.get(inst.role)
            if scaler is not None and inst.index not in scaler.ready:
                continue
            if inst.role != "decode":
                pools["prefill"].append(inst.index)
            if inst.role != "prefill":
                pools["decode"].append(inst.index)
        self.prefill_idx, self.decode_idx = pools["prefill"], pools["decode"]
        r = self._refresh
        every = self.snapshots  # one KV cache and refresh clock for the whole cluster
        self._psnap = SnapshotProvider([self.instances[i] for i in self.prefill_idx], r, every)
        self._dsnap = SnapshotProvider([self.instances[i] for i in self.decode_idx], r, every)

    def _schedule_load(self, t: int, i: int) -> None:
        self._push_ext(t, LOADED, i, None)  # type: ignore[arg-type]

    def _schedule_leave(self, t: int, i: int) -> None:
        self._push_ext(t, LEFT, i, None)  # type: ignore[arg-type]

    def _busy(self, i: int) -> bool:
        """True while instance ``i`` holds or expects work (a draining one cannot leave)."""
        inst = self.pd_instances[i]
        return bool(
            inst.running
            or inst.waiting
            or inst.held
            or self.snapshots.pending[i]
            or self.assigned[i]
            or self.kv_wait[i]
            or self.join_wait[i]
        )

    def _maybe_leave(self, i: int, now: int) -> None:
        """Instance ``i`` may have emptied at ``now`` (the current time: a step applied
        at its launch leaves when it ends, ``busy_until``, through a leave event)."""
        scaler = self.scalers.get(self.pd_instances[i].role)
        if scaler is not None and scaler.draining and i in scaler.draining:
            scaler.maybe_leave(i, now)

    def _on_tick(self, now: int, k: int, _req: Any) -> None:
        # The run is over (no decision on the idle tail) unless a deadlock check is due:
        # it may move requests that wait for decode KV to their prefill instance.
        if not more_work(self) and not any(ev[1] == _UNBLOCK for ev in self._ext):
            run_over(self, now)  # past the end: pending loads and leaves are dropped
            return
        scaler = list(self.scalers.values())[k]
        scaler.decide(now, self._log)
        self._push_ext(now + scaler.cfg.interval, TICK, k, None)  # type: ignore[arg-type]

    def _on_loaded(self, now: int, i: int, _req: Any) -> None:
        if not run_over(self, now):  # a load ending after the work: not shown, not billed
            self.scalers[self.pd_instances[i].role].loaded(i, now)

    def _on_left(self, now: int, i: int, _req: Any) -> None:
        self.scalers[self.pd_instances[i].role].left(i, now)

    def autoscaling_summary(self) -> dict[str, Any]:
        """The results' ``autoscaling`` section: one entry per autoscaled pool."""
        pools = {n: s.summary(self._log, self._end_time) for n, s in self.scalers.items()}
        hours = sum(p["gpu_hours"] for p in pools.values())
        return {
            "pools": pools,
            "gpu_hours": hours,
            "cost": sum(p["cost"] for p in pools.values()),
        }

    def _handoff_hook(self, inst: PDInstance) -> Any:
        def hook(req: Request, end: int) -> None:
            self.held_reqs[inst.index][req.index] = req
            self._prefilled_at[req.index] = end
            self._push_ext(end + self._second_hop(inst, req), _HANDOFF, inst.index, req)

        return hook

    def _second_hop(self, pre: PDInstance, req: Request) -> int:
        """Time from the prompt's end on the prefill side to the decode engine seeing the
        request: llm-d's sidecar (as vLLM's P/D proxy) waits for the prefill server's
        whole response (its one token's output processing), then sends the request to
        the decode server, whose API server takes it in again (the decode latency
        model's queueing time: HTTP, tokenisation of the prompt)."""
        dec = self.pd_instances[self.decode_of[req.index]]
        return pre.latency.output_token_time() + dec.latency.queueing_time(req)

    def _step_end_hook(self, inst: PDInstance, end: int) -> None:
        if end > self.horizon:
            # A step the horizon cuts never reaches its end (the engine applies its
            # state at launch): joins, unblocks and leaves at that end never happen.
            return
        if self.join_wait[inst.index]:
            self._join(end, inst.index)
        if inst.role == "both" and any(self.kv_wait[d] for d in self._dual if d != inst.index):
            # A running slot may free here for a deadlocked instance's waiting requests
            # that were prefilled here. Judged at the step's end, on every instance's
            # state then: this hook runs when the step launches (the engine applies its
            # state at launch), while the other instances are mid-step.
            self._push_ext(end, _UNBLOCK, inst.index, None)  # type: ignore[arg-type]
        if self.kv_wait[inst.index]:
            self._push_retry(end, inst.index)
        elif self.scalers:
            self._maybe_leave(inst.index, inst.clock)  # the launch: it leaves at `end`

    # --- routing: decode first, decide, then prefill ----------------------------------
    def _pick(
        self,
        policy: RoutingPolicy,
        snap: SnapshotProvider,
        idx: list[int],
        req: Request,
        now: int,
        also_pending: list[int] | None = None,
    ) -> PoolChoice:
        """What ``policy`` chooses among ``idx`` (their pending counts fresh)."""
        return route_among(policy, snap, idx, self.snapshots.pending, req, now, also_pending)

    def _decode_waiting(self, i: int) -> int:
        """Requests handed off to instance ``i`` that have not joined its batch yet --
        waiting for KV room, in transfer or for a running slot: vLLM's waiting queue
        there (WAITING_FOR_REMOTE_KVS included). Read at controller decisions only."""
        in_transfer = sum(1 for tr in self.transfers.values() if tr.decode == i)
        return len(self.kv_wait[i]) + in_transfer + len(self.join_wait[i])

    def _on_routing(self, now: int, _inst_idx: int, req: Request) -> None:
        # The decode side's load includes every request already sent its way (still in
        # prefill, in transfer or waiting for a slot): without them a burst routed in the
        # same instant would all pick the same, momentarily idle, decode instance.
        choice = self._pick(self.routing, self._dsnap, self.decode_idx, req, now, self.assigned)
        d = choice.instance
        dec = self.instances[d]
        disagg = self.decider == "always"
        if self.decider == "prefix-threshold":
            req.prefill_target = req.num_prompt_tokens
            cached = dec.kv.find_cached_prefix(req, touch=False)
            uncached = req.num_prompt_tokens - len(cached) * dec.kv.block_size
            disagg = uncached >= self.prefix_threshold  # llm-d: at least the threshold
        if disagg:
            prefill = self._pick(self.prefill_routing, self._psnap, self.prefill_idx, req, now)
            target = prefill.instance
            # A dual-role instance picked for both sides serves the request colocated.
            disagg = target != d
            if disagg:
                choice = prefill  # the trace shows where the request goes first
        if disagg:
            self.decode_of[req.index] = d
            self.assigned[d] += 1
            req.engine_state = PREFILL_ONLY
            self.pd.disaggregated += 1
        else:
            target = d
            self.pd.colocated += 1
        self.pd.per_request[req.index] = {
            "prefill_instance": self.instances[target].name,
            "decode_instance": dec.name,
            "kv_transfer_blocks": 0,
            "kv_transfer_ms": 0.0,
        }
        self._trace_routing(choice, req)
        self.snapshots.pending[target] += 1
        inst = self.instances[target]
        req.handled_by = target
        self._push_ext(now + inst.latency.queueing_time(req), 3, target, req)

    def _on_enqueue(self, now: int, inst_idx: int, req: Request) -> None:
        super()._on_enqueue(now, inst_idx, req)
        if req.state != RequestState.DROPPED:
            return
        if req.index in self.decode_of:
            d = self.decode_of.pop(req.index)
            self.assigned[d] -= 1
            req.engine_state = None
            if self.scalers:
                self._maybe_leave(d, now)
        if self.scalers:  # a draining replica may now hold nothing
            self._maybe_leave(inst_idx, now)

    # --- the transfer ----------------------------------------------------------------
    def _on_handoff(self, now: int, p: int, req: Request) -> None:
        """The prompt is done on prefill instance ``p``: reserve KV on the decode side."""
        del self._prefilled_at[req.index]
        d = self.decode_of[req.index]
        dec = self.pd_instances[d]
        if dec.unservable(req):
            self.pd.dropped_unservable += 1
            dec.stats.count_drop(req)
            req.state = RequestState.DROPPED
            del self.decode_of[req.index]
            self.assigned[d] -= 1
            self._release(now, req, p)
            if self.scalers:
                self._maybe_leave(d, now)
            return
        queue = self.kv_wait[d]
        if queue or not self._try_start(now, req, p, d):
            self.pd.waited_for_decode_kv += 1  # FIFO: behind others, or no room now
            queue.append(req)
            self._unblock(now, d)

    def _try_start(self, now: int, req: Request, p: int, d: int) -> bool:
        blocks = self.pd_instances[d].reserve(req)
        if blocks is None:
            return False
        reused = self.pd_instances[d].kv.blocks_needed(req.num_prompt_tokens) - blocks
        if self._checker is not None and blocks > self.pd_instances[p].kv.blocks_needed(
            req.num_prompt_tokens
        ):
            raise InvariantViolation(
                "transfer of more blocks than the prompt has", time=now, request=req
            )
        # The decode worker issues the read when it starts its next step (vLLM's
        # start_load_kv runs before the forward pass): after the step in flight, if any.
        dec = self.pd_instances[d]
        start = max(now, dec.busy_until)
        per_block, links = self._link_bytes(p, d)
        tr = Transfer(req, p, d, blocks, blocks * per_block, start=start, links=links)
        tr.remaining = tr.nbytes
        self.transfers[req.index] = tr
        self.held_reqs[d][req.index] = req
        if self.pd_instances[d].role == "both":
            self._both += 1
        self.pd.blocks_reused += reused
        self.in_transfer += 1
        if self.in_transfer > self.pd.peak_concurrent:
            self.pd.peak_concurrent = self.in_transfer
        if start + self.base_latency > now:
            self._push_ext(start + self.base_latency, _JOIN, p, req)
        else:
            self._on_join(now, p, req)
        return True

    def _link_bytes(self, p: int, d: int) -> tuple[float, int]:
        """Bytes of one block over the busiest link from prefill instance ``p`` to decode
        instance ``d``, and how many links move the block in parallel.

        vLLM's NIXL connector has every decode rank read its whole shard of the KV
        (``TpKVTopology.get_target_remote_ranks`` in kv_connector/utils.py,
        ``NixlConnectorWorker._read_blocks_for_req``): with decode TP >= prefill TP each
        decode rank reads its heads (MLA: the whole latent) from prefill rank
        ``rank // ratio``, so a prefill GPU's NIC sends ``ratio`` decode shards; with
        prefill TP > decode TP each decode rank reads a slice from each of ``ratio``
        prefill ranks (MLA: the latent once, from the first), so its own NIC receives the
        whole shard. Either way the network carries decode TP x the decode GPU's shard,
        over min(TP_p, TP_d) GPU pairs in parallel, each carrying an equal part: for a
        GQA model the whole KV / min(TP_p, TP_d). Equal TPs: one shard per GPU, as ever.
        """
        tp_p, tp_d = self.ranks[p], self.ranks[d]
        if tp_p == tp_d:
            return self.block_bytes[p], tp_p
        links = min(tp_p, tp_d)
        return self.block_bytes[d] * tp_d / links, links

    def _on_join(self, now: int, p: int, req: Request) -> None:
        """The base latency is over: the transfer shares link ``p`` from now on."""
        tr = self.transfers[req.index]
        if tr.remaining <= _EPS_BYTES:
            self._complete(now, tr)
            return
        link = self.links[p]
        link.advance(now)
        link.active.append(tr)
        self._reschedule(now, p)

    def _reschedule(self, now: int, p: int) -> None:
        link = self.links[p]
        if self._checker is not None:
            # The shares sum to at most the link: everything it has moved (completed
            # transfers plus the progress of active ones) fits in its busy time.
            moved = link.done_bytes + sum(tr.nbytes - tr.remaining for tr in link.active)
            if moved > link.bandwidth * link.busy_us + _EPS_BYTES * (1 + link.transfers):
                raise InvariantViolation(
                    f"link of instance_{p} moved {moved:.0f} bytes in {link.busy_us} µs "
                    f"at {link.bandwidth:g} bytes/µs: shares exceed its bandwidth",
                    time=now,
                )
        t = link.completion_time(now)
        link.next_time = t
        if t >= 0:
            self._push_ext(t, _LINK, p, link.active[0].req)

    def _on_link(self, now: int, p: int, _req: Request) -> None:
        link = self.links[p]
        if now != link.next_time:
            return  # superseded by a later start or end
        link.advance(now)
        done = [tr for tr in link.active if tr.remaining <= _EPS_BYTES]
        if not done:
            self._reschedule(now, p)
            return
        link.active = [tr for tr in link.active if tr.remaining > _EPS_BYTES]
        link.done_bytes += sum(tr.nbytes for tr in done)
        link.transfers += len(done)
        self._reschedule(now, p)
        for tr in done:
            self._complete(now, tr)

    def _complete(self, now: int, tr: Transfer) -> None:
        """The decode side holds the KV: the prefill side frees, the decode side runs."""
        req = tr.req
        del self.transfers[req.index]
        self.in_transfer -= 1
        pd = self.pd
        pd.transfers_done += 1
        pd.bytes_moved += tr.nbytes * tr.links
        pd.blocks_moved += tr.blocks
        pd.transfer_us.append(now - tr.start)
        rec = pd.per_request[req.index]
        rec["kv_transfer_blocks"] = tr.blocks
        rec["kv_transfer_ms"] = (now - tr.start) / 1000.0
        self._release(now, req, tr.prefill)
        if self.pd_instances[tr.decode].role == "both":
            self._both -= 1  # from now on held on the decode side only
        self.join_wait[tr.decode].append(req)
        self._join(now, tr.decode)

    def _join(self, now: int, d: int) -> None:
        """Requests whose KV arrived join decode instance ``d``'s batch in arrival order,
        while it has running slots (vLLM: a request whose KV read ended waits at the head
        of the queue for a slot; ``max_num_seqs`` bounds the running batch, not the reads)."""
        dec = self.pd_instances[d]
        queue = self.join_wait[d]
        while queue and len(dec.running) < dec.config.max_num_seqs:
            req = queue.popleft()
            del self.decode_of[req.index]
            self.assigned[d] -= 1
            del self.held_reqs[d][req.index]
            if dec.accept(req, now):  # idle: start when its last step ends (no overlap)
                heapq.heappush(self._steps, (max(now, dec.busy_until), d, self._seq))
                self._seq += 1

    def _release(self, now: int, req: Request, p: int) -> None:
        pre = self.pd_instances[p]
        if self._checker is not None:
            need = pre.kv.blocks_needed(req.num_prompt_tokens)
            if pre.kv.held_blocks(req) < need:
                raise InvariantViolation(
                    "prefill-side blocks freed before the transfer ended",
                    time=now,
                    instance=pre.name,
                    request=req,
                )
        del self.held_reqs[p][req.index]
        if pre.release(req, now):
            heapq.heappush(self._steps, (max(now, pre.busy_until), p, self._seq))
            self._seq += 1
        elif self.scalers:
            self._maybe_leave(p, now)
        if self.kv_wait[p]:  # freed blocks: transfers waiting to decode here may start
            self._push_retry(now, p)

    def _push_retry(self, t: int, d: int) -> None:
        self._retries[d] += 1
        self._push_ext(t, _RETRY, d, self.kv_wait[d][0])

    def _on_retry(self, now: int, d: int, _req: Request) -> None:
        """Decode instance ``d`` freed KV: start waiting transfers in arrival order."""
        self._retries[d] -= 1
        queue = self.kv_wait[d]
        while queue:
            req = queue[0]
            p = req.handled_by  # its prefill instance until the transfer ends
            if not self._try_start(now, req, p, d):
                break
            queue.popleft()
        self._unblock(now, d)

    def _quiet(self, x: int, now: int, moving: set[int]) -> bool:
        """Dual-role instance ``x`` changes nothing by itself from now on: nothing runs or
        is about to run there (no step in flight or pending, no retry due), no transfer
        starts, runs or waits for a slot there, and none of the prompts it prefilled is
        in its second hop (``moving``: requests in transfer)."""
        inst = self.pd_instances[x]
        if inst.running or inst.step_pending or inst.busy_until > now or self._retries[x]:
            return False
        if self.join_wait[x]:
            return False
        return not any(
            i in moving or i in self._prefilled_at for i in self.held_reqs[x]
        )  # (held_reqs: its prompts waiting for decode KV, the requests it reserved)

    def _deadlocked(self, now: int) -> set[int]:
        """The dual-role instances in a wait cycle: each quiet, waiting for decode KV room,
        and every prompt it prefilled for others waiting for decode KV on a member of the
        cycle, so that none of them can ever free a block (the greatest such set).

        A decode-only instance is never in it: it frees KV by running its own requests;
        nor is an instance any of whose prompts waits on one outside the set, which will
        eventually take it and free the blocks it holds."""
        moving = set(self.transfers)
        cycle = {x for x in self._dual if self.kv_wait[x] and self._quiet(x, now, moving)}
        shrunk = True
        while shrunk:
            shrunk = False
            for x in sorted(cycle):
                if any(self.decode_of[i] not in cycle for i in self.held_reqs[x]):
                    cycle.discard(x)
                    shrunk = True
        return cycle

    def _on_unblock(self, now: int, p: int, _req: Any) -> None:
        """A step of dual-role instance ``p`` ended: a deadlocked instance's requests
        prefilled on ``p`` may be decoded there now (it has a free running slot)."""
        for d in self._dual:
            if d != p and self.kv_wait[d]:
                self._unblock(now, d)

    def _unblock(self, now: int, d: int) -> None:
        """Break a wait cycle between dual-role instances (each full of prompts it
        prefilled for the other, see :meth:`_deadlocked`): while ``d`` is in one, its
        waiting requests prefilled on a dual-role instance are decoded there instead (as
        vLLM's NIXL connector frees such requests on the prefill side after a timeout, and
        the router retries)."""
        queue = self.kv_wait[d]
        dec = self.pd_instances[d]
        if not queue or dec.role != "both":
            return  # a decode-only instance frees KV by running its own requests
        if dec.running or dec.step_pending:
            return  # judged again after its next step (which retries its queue)
        if self._retries[d]:
            return  # judged again by that retry, on the state then
        if dec.busy_until > now:
            # Its last step is in flight (its state was applied at its launch, which
            # scheduled no retry: the queue was empty then): judged again when it ends.
            self._push_retry(dec.busy_until, d)
            return
        if d not in self._deadlocked(now):
            return
        keep: deque[Request] = deque()
        for req in queue:
            p = req.handled_by
            pre = self.pd_instances[p]
            if pre.role != "both" or len(pre.running) >= pre.config.max_num_seqs:
                keep.append(req)  # (a full batch there: retried after its steps)
                continue
            del self.decode_of[req.index]
            self.assigned[d] -= 1
            del self.held_reqs[p][req.index]
            self.pd.decoded_at_prefill += 1
            self.pd.per_request[req.index]["decode_instance"] = pre.name
            if pre.accept(req, now, local=True):
                heapq.heappush(self._steps, (max(now, pre.busy_until), p, self._seq))
                self._seq += 1
        self.kv_wait[d] = keep
        if self.scalers:
            self._maybe_leave(d, now)

    # --- end of run ------------------------------------------------------------------
    def _finish(self, as_list: list[Request] | None, interrupted: bool) -> SimulationOutcome:
        """Requests handed off (in their second hop, waiting for decode KV, in transfer or
        waiting for a decode slot) are logged and counted as in flight to their decode
        instance (``still_queued``); a request whose prefill step the end of the run cuts
        is still running on its prefill instance. So the summary's request counts add up
        to what was injected."""
        mine = (_HANDOFF, _LINK, _JOIN, _RETRY, TICK, LOADED, _UNBLOCK, LEFT)
        for scaler in self.scalers.values():
            scaler.close(self._end_time)
        seen: set[int] = set()
        log = self._log

        def cut(req: Request) -> None:
            # Counted on its decode instance (still_queued, below), so its record names
            # that instance too (handled_by; docs/disaggregation.md), not the prefill
            # instance it left: the run is over, nothing reads handled_by as the
            # transfer's source any more.
            if req.index not in seen:
                seen.add(req.index)
                req.handled_by = self.decode_of[req.index]
                log.add(req)

        for ev in self._ext:
            if ev[1] != _HANDOFF:
                continue
            req = ev[4]
            if self._prefilled_at[req.index] <= self.horizon:
                cut(req)  # its prompt was done: handed off
                continue
            # Its prefill step was still running at the end (the engine applied it, and
            # handed the request off, at the step's launch): it is still running there.
            pre = self.pd_instances[ev[2]]
            del self.held_reqs[pre.index][req.index]
            pre.held -= 1
            pre.handed_off -= 1
            pre.running.append(req)
            self.assigned[self.decode_of.pop(req.index)] -= 1
        self._ext = [ev for ev in self._ext if ev[1] not in mine]
        heapq.heapify(self._ext)
        for queue in (*self.kv_wait, *self.join_wait):
            for req in queue:
                cut(req)
        for tr in self.transfers.values():
            cut(tr.req)
        if self._checker is not None and not interrupted:
            for inst in self.pd_instances:
                if inst.role == "prefill" and inst.stats.completed:
                    raise InvariantViolation(
                        f"{inst.stats.completed} requests finished on a prefill-only instance",
                        time=self._end_time,
                        instance=inst.name,
                    )
        outcome = super()._finish(as_list, interrupted)
        for index in seen:
            target = self.decode_of.get(index, -1)
            outcome.in_flight[target] = outcome.in_flight.get(target, 0) + 1
        if self.scalers:
            scaled = {i for s in self.scalers.values() for i in s.members}
            ever = {i for s in self.scalers.values() for i in s.provisioned}
            outcome.provisioned = sorted(
                i for i in range(len(self.instances)) if i not in scaled or i in ever
            )
        return outcome

    def exists(self, i: int) -> bool:
        """Instance ``i`` holds its GPUs now (an instance of an autoscaled pool only while
        it is ready, loading or draining)."""
        scaler = self.scalers.get(self.pd_instances[i].role)
        return scaler is None or scaler.exists(i)

    def pd_summary(self) -> dict[str, Any]:
        """The ``pd`` section's run-wide figures."""
        from inference_sim.metrics.stats import percentile_ms

        pd = self.pd
        times = sorted(pd.transfer_us)
        out: dict[str, Any] = {
            "prefill_instances": sum(1 for i in self.pd_instances if i.role == "prefill"),
            "decode_instances": sum(1 for i in self.pd_instances if i.role == "decode"),
            "dual_instances": sum(1 for i in self.pd_instances if i.role == "both"),
            "decider": self.decider,
            "disaggregated_requests": pd.disaggregated,
            "colocated_requests": pd.colocated,
            "transfers": pd.transfers_done,
            "transfer_bytes": round(pd.bytes_moved),
            "transfer_blocks": pd.blocks_moved,
            "decode_prefix_reused_blocks": pd.blocks_reused,
            "peak_concurrent_transfers": pd.peak_concurrent,
            "waited_for_decode_kv": pd.waited_for_decode_kv,
            "decoded_at_prefill_after_wait": pd.decoded_at_prefill,
            "dropped_at_decode": pd.dropped_unservable,
            "in_transfer_at_end": len(self.transfers),
            "waiting_for_decode_kv_at_end": sum(len(q) for q in self.kv_wait),
            "waiting_for_decode_slot_at_end": sum(len(q) for q in self.join_wait),
        }
        if times:
            out["kv_transfer_mean_ms"] = sum(times) / len(times) / 1000.0
        else:
            out["kv_transfer_mean_ms"] = 0.0
        for p in (50, 90, 99):
            out[f"kv_transfer_p{p}_ms"] = percentile_ms(times, p)
        return out
