"""Scorers for the ``weighted`` routing policy.

A scorer rates every instance in [0, 1] (higher = better); values outside are
clamped. ``score(request, state)`` returns one value per instance (a list in index
order, or a mapping instance id -> value, missing ids scoring 0). A scorer that keeps
state may also define ``observe(request, target)``, called after every decision of
its policy with the chosen instance index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from inference_sim.core.request import Request
from inference_sim.policies.base import PolicyError, RouterState
from inference_sim.policies.prefix import (
    DEFAULT_INDEX_CAPACITY,
    PrefixCacheIndex,
    router_block_hashes,
)
from inference_sim.policies.registry import Registry

SCORERS = Registry("scorers", "routing scorer", "score", "", "score(request, state)")

DEFAULT_PROFILE: tuple[tuple[str, float], ...] = (
    ("prefix-affinity", 3.0),
    ("queue-depth", 2.0),
    ("kv-utilization", 2.0),
)


def least_is_best(values: list[int]) -> list[float]:
    """Min-max normalised and inverted: the smallest value 1, the largest 0 (all 1 when
    they are equal)."""
    lo = min(values)
    hi = max(values)
    if hi == lo:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - x) / span for x in values]


@SCORERS.register("queue-depth")
class QueueDepthScorer:
    """Min-max normalised effective load: the least loaded 1, the most loaded 0."""

    def score(self, request: Request, state: RouterState) -> list[float]:
        return least_is_best([s.effective_load for s in state.snapshots])


@SCORERS.register("waiting-queue")
class WaitingQueueScorer:
    """llm-d's ``queue-scorer``: min-max over the waiting queues only (vLLM's
    ``num_requests_waiting``), so with no queue anywhere every instance scores 1 and the
    other scorers decide; running and in-flight requests do not count."""

    def score(self, request: Request, state: RouterState) -> list[float]:
        return least_is_best([s.queue_depth for s in state.snapshots])


@SCORERS.register("kv-utilization")
class KVUtilizationScorer:
    """``1 - KV utilisation`` (subject to snapshot staleness)."""

    def score(self, request: Request, state: RouterState) -> list[float]:
        return [1.0 - s.kv_utilization for s in state.snapshots]


@SCORERS.register("load-balance")
class LoadBalanceScorer:
    """``1 / (1 + effective load)``."""

    def score(self, request: Request, state: RouterState) -> list[float]:
        return [1.0 / (1 + s.effective_load) for s in state.snapshots]


@SCORERS.register("prefix-affinity")
class PrefixAffinityScorer:
    """Share of the request's complete prompt blocks the router already sent there.

    The matched length is the longest run of the request's block hashes, from the
    first block, present in the instance's router-side index; 0 for every instance
    when the prompt has no complete block. After each decision the request's block
    hashes are recorded under the chosen instance.
    """

    def __init__(
        self,
        block_size: int = 16,
        num_instances: int = 1,
        index_capacity: int = DEFAULT_INDEX_CAPACITY,
    ) -> None:
        if block_size <= 0:
            raise PolicyError(f"block size must be > 0, got {block_size}")
        self.block_size = block_size
        self.index = PrefixCacheIndex(num_instances, index_capacity)
        self._last: tuple[Request | None, list[int]] = (None, [])

    def _hashes(self, request: Request) -> list[int]:
        req, hashes = self._last
        if req is not request:
            hashes = router_block_hashes(request, self.block_size)
            self._last = (request, hashes)
        return hashes

    def score(self, request: Request, state: RouterState) -> list[float]:
        n = state.num_instances
        hashes = self._hashes(request)
        total = len(hashes)
        if total == 0:
            return [0.0] * n
        members = state.members
        if members is None:
            return [m / total for m in self.index.match_lengths(hashes, n)]
        every = self.index.match_lengths(hashes, max(members) + 1)  # cluster-wide
        return [every[g] / total for g in members]

    def observe(self, request: Request, target: int) -> None:
        """Record the request's blocks under instance ``target`` (cluster-wide index)."""
        self.index.record(self._hashes(request), target)
        self._last = (None, [])

    def forget(self, instance: int) -> None:
        """Instance ``instance`` left: a server started there later has an empty cache."""
        self.index.forget(instance)


#: ``adapter-affinity``'s score for an instance with a free adapter slot: llm-d's
#: lora-affinity scorer (gateway-api-inference-extension ``scorer/lora_affinity.go``)
#: ranks loaded (1.0) above a free slot (0.8) above a full instance (0).
_FREE_SLOT_SCORE = 0.8


@SCORERS.register("adapter-affinity")
class AdapterAffinityScorer:
    """llm-d's lora-affinity levels: 1 for instances likely to hold the request's LoRA
    adapter on the GPU, 0.8 for instances with a free adapter slot, else 0.

    A router-side estimate, like ``prefix-affinity``'s index: each instance remembers
    the adapters the router last sent it, up to its ``max_loras`` GPU slots, least
    recently routed forgotten first (the engine's own LRU, docs/lora.md). A request
    without an adapter is scored as llm-d scores it: its target model (the base model)
    is never an active adapter, so it gets the free-slot level on instances with a free
    slot and 0 on full ones.
    """

    def __init__(self, num_instances: int = 1, max_loras: int = 0) -> None:
        self.slots = max(max_loras, 1)
        # Per instance (cluster-wide index): adapters in routing order, oldest first.
        self.recent: dict[int, dict[str, None]] = {}

    def score(self, request: Request, state: RouterState) -> list[float]:
        name = request.adapter
        out = []
        slots = self.slots
        empty: dict[str, None] = {}
        for i in range(state.num_instances):
            held = self.recent.get(state.instance(i), empty)
            # lora_affinity.go: active 1, a free adapter slot 0.8, else 0 (its 0.6 for an
            # adapter waiting to load is a state the router does not see here).
            if name and name in held:
                out.append(1.0)
            else:
                out.append(_FREE_SLOT_SCORE if len(held) < slots else 0.0)
        return out

    def observe(self, request: Request, target: int) -> None:
        """Note the adapter as the most recent on instance ``target`` (cluster-wide)."""
        name = request.adapter
        if not name:
            return
        held = self.recent.setdefault(target, {})
        held.pop(name, None)
        held[name] = None
        if len(held) > self.slots:
            del held[next(iter(held))]

    def forget(self, instance: int) -> None:
        """Instance ``instance`` left: a server started there later has no adapter."""
        self.recent.pop(instance, None)


def parse_scorers(text: str) -> list[tuple[str, float]]:
    """``name:weight,...`` into ordered pairs; PolicyError naming the bad part.

    The weight follows the LAST colon, so plug-in names (``module:Class:2``) work.
    Names are checked against the registry (plug-ins are imported).
    """
    out: list[tuple[str, float]] = []
    for raw in text.split(","):
        part = raw.strip()
        name, sep, value = part.rpartition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise PolicyError(f"invalid scorer config {part!r} (expected name:weight)")
        try:
            weight = float(value)
        except ValueError:
            raise PolicyError(f"invalid weight for scorer {name!r}: {value!r}") from None
        out.append((name, weight))
    check_scorers(out)
    return out


def check_scorers(pairs: Sequence[tuple[str, float]]) -> None:
    """Known names, each at most once, weights finite and > 0."""
    seen: set[str] = set()
    for name, weight in pairs:
        if name not in SCORERS and not name.startswith("<"):  # "<i>": a scorer object
            SCORERS.lookup(name)  # imports a plug-in, or raises listing the valid names
        if name in seen:
            raise PolicyError(f"duplicate scorer {name!r}; each scorer may appear at most once")
        seen.add(name)
        if not (math.isfinite(weight) and weight > 0):
            raise PolicyError(
                f"scorer {name!r} weight must be a finite positive number, got {weight}"
            )


def format_scorers(pairs: Sequence[tuple[str, float]]) -> str:
    """The ``name:weight,...`` text of ``pairs`` (round-trips through parse_scorers)."""
    return ",".join(f"{name}:{weight!r}" for name, weight in pairs)
