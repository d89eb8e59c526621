"""Routing snapshots: what admission and routing policies see of each instance.

Signals are read only at cluster events (admission and routing decisions). The event
loop never lets an instance run past the next cluster event, so what is read there
is the instance's exact state at that tick (instance events at the same tick run
after cluster events).

Freshness tiers (cluster spec section 6):

* queue depth, batch size and pending requests: read live at every decision;
* KV utilisation, free KV blocks and prefix-cache hit rate: live when
  ``refresh_interval`` is 0, otherwise cached and re-read for all instances at the
  first decision whose clock is at least ``refresh_interval`` after the previous
  refresh (the first refresh comes at the first decision at or after
  ``refresh_interval``; until then these fields read 0). Refreshes happen lazily at
  decisions -- no timer events -- so runs stay deterministic.

A pool's provider (the ready replicas of an autoscaled cluster, one side of a P/D
pair) shares the cluster-wide provider's KV cache and refresh clock (``shared``): every
decision, admission included, advances the one clock, and a pool rebuilt at a scale
event keeps it, so a pool refreshes exactly when the whole cluster would.
"""

from __future__ import annotations

from collections.abc import Sequence

from inference_sim.instance.engine import Instance
from inference_sim.policies.base import RouterState, RoutingSnapshot


def _kv_fields(inst: Instance) -> tuple[float, int, float]:
    kv = inst.kv
    used = kv.num_used
    total = kv.num_blocks
    stats = inst.stats
    looked = stats.prefix_lookup_tokens
    hit = stats.cached_prompt_tokens / looked if looked else 0.0
    return (used / total if total else 0.0, total - used, hit)


class SnapshotProvider:
    """Builds a :class:`RouterState` per decision; owns the pending-request counters."""

    __slots__ = (
        "_kv",
        "_last_refresh",
        "instances",
        "interval",
        "members",
        "num_instances",
        "pending",
        "shared",
    )

    def __init__(
        self,
        instances: Sequence[Instance],
        refresh_interval: int = 0,
        shared: SnapshotProvider | None = None,
    ) -> None:
        if refresh_interval < 0:
            raise ValueError(f"--snapshot-refresh-interval must be >= 0, got {refresh_interval}")
        self.instances = list(instances)
        self.num_instances = len(self.instances)
        ids = tuple(inst.index for inst in self.instances)
        # A subset of the cluster (a pool): tell policies which instances they see.
        self.members = None if ids == tuple(range(len(ids))) else ids
        self.interval = refresh_interval
        # Routed to an instance but not yet in its wait queue.
        self.pending = [0] * self.num_instances
        self._kv: list[tuple[float, int, float]] = [(0.0, 0, 0.0)] * self.num_instances
        self._last_refresh = 0
        # The cluster-wide provider whose KV cache and refresh clock a pool reads.
        self.shared = shared

    def reset(self) -> None:
        """Back to the start of a run: nothing pending, KV fields never refreshed."""
        self.pending[:] = [0] * self.num_instances
        self._kv = [(0.0, 0, 0.0)] * self.num_instances
        self._last_refresh = 0

    def refresh(self, clock: int) -> None:
        """Re-read the KV fields of every instance when the interval has passed."""
        if self.interval and clock - self._last_refresh >= self.interval:
            self._kv = [_kv_fields(inst) for inst in self.instances]
            self._last_refresh = clock

    def state(self, clock: int) -> RouterState:
        """The router state at ``clock`` (refreshes stale KV fields first)."""
        (self.shared or self).refresh(clock)
        return RouterState(
            None, clock, build=self.snapshots, num_instances=self.num_instances,
            members=self.members,
        )  # fmt: skip

    def snapshots(self) -> list[RoutingSnapshot]:
        """One snapshot per instance, in index order, as of now."""
        out = []
        pending = self.pending
        shared = self.shared
        cached = (shared._kv if shared is not None else self._kv) if self.interval else None
        for i, inst in enumerate(self.instances):
            if cached is None:
                util, free, hit = _kv_fields(inst)
            else:
                util, free, hit = cached[inst.index if shared is not None else i]
            out.append(
                RoutingSnapshot(
                    inst.name,
                    i,
                    len(inst.waiting),
                    len(inst.running),
                    util,
                    free,
                    hit,
                    pending[i],
                )
            )
        return out
