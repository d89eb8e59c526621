"""Routing policies: pick the instance that serves an admitted request.

``route(request, state)`` returns a :class:`RoutingDecision` (a bare instance index or
instance id is accepted from plug-ins). Load means the snapshot's effective load:
queued + running + routed-but-not-yet-queued requests. Ties go to the lowest index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from inference_sim.core.request import Request
from inference_sim.policies.base import PolicyError, RouterState, RoutingDecision
from inference_sim.policies.prefix import router_block_hashes
from inference_sim.policies.registry import Registry
from inference_sim.policies.scorers import DEFAULT_PROFILE, SCORERS, check_scorers

ROUTING = Registry("routing", "routing policy", "route", "round-robin", "route(request, state)")


@ROUTING.register("round-robin")
class RoundRobin:
    """Instances in turn; only routed requests advance the turn."""

    def __init__(self) -> None:
        self.counter = 0

    def route(self, request: Request, state: RouterState) -> RoutingDecision:
        c = self.counter
        self.counter = c + 1
        return RoutingDecision(c % state.num_instances, f"round-robin[{c}]")


@ROUTING.register("least-loaded")
class LeastLoaded:
    """The lowest effective load."""

    def route(self, request: Request, state: RouterState) -> RoutingDecision:
        best = 0
        best_load = -1
        for i, s in enumerate(state.snapshots):
            load = s.queue_depth + s.batch_size + s.pending_requests
            if best_load < 0 or load < best_load:
                best, best_load = i, load
        return RoutingDecision(best, f"least-loaded (load={best_load})")


@ROUTING.register("always-busiest")
class AlwaysBusiest:
    """The highest effective load (pathological, for testing)."""

    def route(self, request: Request, state: RouterState) -> RoutingDecision:
        best = 0
        best_load = -1
        for i, s in enumerate(state.snapshots):
            load = s.queue_depth + s.batch_size + s.pending_requests
            if load > best_load:
                best, best_load = i, load
        return RoutingDecision(best, f"always-busiest (load={best_load})")


@ROUTING.register("vllm-dp")
class VllmDataParallel:
    """vLLM's own load balancer across data-parallel engines (``--data-parallel-size``).

    One ``vllm serve`` with N data-parallel ranks runs N engine cores behind one API
    server, which picks a rank per request (vLLM v1 ``DPLBAsyncMPClient``): the lowest
    ``4 x waiting + running``, ties to the lowest rank. The counts come from the DP
    coordinator, which republishes the engines' queue lengths every 100 ms while they
    change; between two publications the API server adds one waiting request to the rank
    it picked, so a burst spreads instead of piling onto the rank that looked idle.

    Here the counts are re-read (queued plus routed-but-not-yet-queued requests as
    waiting, the batch as running) at the first decision of each ``refresh_us`` period,
    or when the set of instances changed, and each decision adds one waiting request to
    its pick until the next refresh. The routed-but-not-queued requests count as waiting
    because vLLM balances after the request's HTTP handling and tokenisation, which the
    simulator places between routing and the queue. The real counts are up to one period
    and the coordinator's transport older.

    Which vLLM versions and models this is: engines that publish their counts (MoE
    models, whose data-parallel ranks step in lockstep -- not modelled here -- and dense
    models before vLLM moved them to independent engines early in 2026). Dense models in
    vLLM 0.15 publish none, so each API server only counts its own picks: a rotation,
    which ``round-robin`` models (docs/cluster.md).
    """

    def __init__(self, refresh_us: int = 100_000) -> None:
        if refresh_us <= 0:
            raise PolicyError(f"vllm-dp refresh period must be > 0 µs, got {refresh_us}")
        self.refresh_us = refresh_us
        self._period = -1
        self._ids: tuple[str, ...] = ()
        self._counts: list[list[int]] = []

    def route(self, request: Request, state: RouterState) -> RoutingDecision:
        period = state.clock // self.refresh_us
        snaps = state.snapshots
        ids = tuple(s.id for s in snaps)
        if period != self._period or ids != self._ids:
            self._period, self._ids = period, ids
            self._counts = [[s.queue_depth + s.pending_requests, s.batch_size] for s in snaps]
        best = 0
        best_score = -1
        for i, (waiting, running) in enumerate(self._counts):
            score = 4 * waiting + running
            if best_score < 0 or score < best_score:
                best, best_score = i, score
        self._counts[best][0] += 1
        return RoutingDecision(best, f"vllm-dp (score={best_score})")


class PrefixAffinity:
    """Same prompt blocks, same instance; otherwise least-loaded (and remember it).

    The key is the hash of the last complete prompt block, which chains all earlier
    blocks, so two requests share it only when all their complete blocks are equal
    (prompts shorter than a block are keyed by the whole prompt). For shared prefixes
    with different continuations use ``weighted`` with the ``prefix-affinity`` scorer.
    """

    def __init__(self, block_size: int = 16) -> None:
        if block_size <= 0:
            raise PolicyError(f"block size must be > 0, got {block_size}")
        self.block_size = block_size
        self.owner: dict[Any, int] = {}
        self._fallback = LeastLoaded()

    def route(self, request: Request, state: RouterState) -> RoutingDecision:
        hashes = router_block_hashes(request, self.block_size)
        key: Any = hashes[-1] if hashes else request.input_tokens.tobytes()
        owner = self.owner.get(key)  # a cluster-wide index (pools shift positions)
        members = state.members
        if owner is not None:
            if members is None:
                if owner < state.num_instances:
                    return RoutingDecision(owner, "prefix-affinity (cache-hit)")
            elif owner in members:
                return RoutingDecision(members.index(owner), "prefix-affinity (cache-hit)")
        d = self._fallback.route(request, state)
        self.owner[key] = state.instance(d.target)  # type: ignore[arg-type]
        return RoutingDecision(d.target, "prefix-affinity (cache-miss, fallback to least-loaded)")

    def forget(self, instance: int) -> None:
        """Instance ``instance`` (cluster-wide) left: its prompts have no owner any more."""
        self.owner = {k: v for k, v in self.owner.items() if v != instance}


ROUTING.register("prefix-affinity", PrefixAffinity)


class Weighted:
    """Argmax of a weighted sum of scorer values (weights normalised to sum to 1).

    ``scorers`` is an ordered list of ``(scorer, weight)``; a scorer is a registered
    name, a plug-in name or an object with ``score``. Empty: the default profile
    ``prefix-affinity:3, queue-depth:2, kv-utilization:2``. ``context`` (block size,
    number of instances, ...) is offered to the scorers' constructors.
    """

    def __init__(self, scorers: Sequence[tuple[Any, float]] | None = None, **context: Any) -> None:
        pairs = list(scorers) if scorers else list(DEFAULT_PROFILE)
        check_scorers(
            [(n if isinstance(n, str) else f"<{i}>", w) for i, (n, w) in enumerate(pairs)]
        )
        total = sum(w for _, w in pairs)
        if total == math.inf:
            # Weights near the float maximum sum to inf and would normalise to 0 each
            # (every instance tying at 0, all traffic to instance 0): scale them first.
            top = max(w for _, w in pairs)
            pairs = [(n, w / top) for n, w in pairs]
            total = sum(w for _, w in pairs)
        self.scorers: list[tuple[Any, float]] = []
        self.observers: list[Any] = []
        self.names: list[str] = []
        for name, weight in pairs:
            if isinstance(name, str):
                scorer = SCORERS.create(name, **context)
                self.names.append(name)
            else:
                scorer = name
                self.names.append(type(scorer).__name__)
            self.scorers.append((scorer, weight / total))
            observe = getattr(scorer, "observe", None)
            if callable(observe):
                self.observers.append(observe)

    def route(self, request: Request, state: RouterState) -> RoutingDecision:
        snaps = state.snapshots
        n = len(snaps)
        composite = [0.0] * n
        for k, (scorer, w) in enumerate(self.scorers):
            values = scorer.score(request, state)
            if isinstance(values, Mapping):
                values = [values.get(s.id, 0.0) for s in snaps]
            try:
                if len(values) != n:
                    raise PolicyError(
                        f"routing scorer {self.names[k]} returned {len(values)} scores for "
                        f"{n} instances; it must rate each instance"
                    )
                for i in range(n):
                    v = values[i]
                    if v > 1.0:
                        v = 1.0
                    elif not v >= 0.0:
                        if v != v:
                            raise PolicyError(
                                f"routing scorer {self.names[k]} returned NaN for instance "
                                f"{i}; scores are numbers in [0, 1]"
                            )
                        v = 0.0  # negative: clamped, as documented
                    composite[i] += v * w
            except TypeError:
                raise PolicyError(
                    f"routing scorer {self.names[k]} returned {values!r:.80}; scores are "
                    "numbers in [0, 1], one per instance (a list, or a mapping by instance id)"
                ) from None
        best = -1.0
        best_idx = 0
        for i in range(n):
            if composite[i] > best:
                best = composite[i]
                best_idx = i
        if self.observers:
            chosen = state.instance(best_idx)  # cluster-wide: pools shift positions
            for observe in self.observers:
                observe(request, chosen)
        return RoutingDecision(best_idx, f"weighted-scoring (score={best:.3f})", composite)

    def forget(self, instance: int) -> None:
        """Instance ``instance`` (cluster-wide) left: scorers that remember it forget it."""
        for scorer, _w in self.scorers:
            forget = getattr(scorer, "forget", None)
            if callable(forget):
                forget(instance)


@ROUTING.register("weighted")
def _weighted(
    routing_scorers: Sequence[tuple[Any, float]] | None = None, **context: Any
) -> Weighted:
    return Weighted(routing_scorers, **context)
