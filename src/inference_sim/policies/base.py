"""What policies see and return: snapshots, router state, decisions, and the protocols.

Every policy kind is a small :class:`~typing.Protocol`. A plug-in only needs the one
method its kind names; no base class is required:

=================  ============================================  =========================
kind               method                                        returns
=================  ============================================  =========================
admission          ``admit(request, state)``                     ``bool`` or ``(bool, reason)``
routing            ``route(request, state)``                     instance index, instance id
                                                                 or :class:`RoutingDecision`
routing scorer     ``score(request, state)``                     one value per instance
                                                                 (list in index order, or a
                                                                 mapping id -> value)
                   ``observe(request, target)`` (optional)       called after each decision
priority           ``priority(request, now)``                    ``float`` (higher = sooner)
scheduler          ``order(wait_queue, now)``                    ``None`` (reorder in place)
=================  ============================================  =========================

``state`` is a :class:`RouterState`: the cluster clock and one :class:`RoutingSnapshot`
per instance, in instance index order.
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from inference_sim.core.request import Request


class PolicyError(ValueError):
    """A policy name, plug-in or parameter that cannot be used (one-line message)."""


@dataclass(slots=True)
class RoutingSnapshot:
    """One instance as the router sees it at a decision.

    ``queue_depth``, ``batch_size`` and ``pending_requests`` are always current;
    ``kv_utilization``, ``free_kv_blocks`` and ``cache_hit_rate`` may be up to
    ``--snapshot-refresh-interval`` old (zero before their first refresh).
    """

    id: str = ""
    index: int = 0
    queue_depth: int = 0
    batch_size: int = 0
    kv_utilization: float = 0.0
    free_kv_blocks: int = 0
    cache_hit_rate: float = 0.0
    pending_requests: int = 0

    @property
    def effective_load(self) -> int:
        """Queued + running + routed-but-not-yet-queued requests (what load policies use)."""
        return self.queue_depth + self.batch_size + self.pending_requests


class RouterState:
    """The cluster clock and the instances' snapshots, built for one decision.

    Snapshots are built on first access (a policy that never looks pays nothing);
    they describe the cluster at ``clock`` and must not be kept for later decisions.
    Tests and plug-in authors can build one directly:
    ``RouterState([RoutingSnapshot("instance_0", 0, queue_depth=3), ...], clock=0)``.
    """

    __slots__ = ("_build", "_snapshots", "clock", "members", "num_instances")

    def __init__(
        self,
        snapshots: Sequence[RoutingSnapshot] | None = None,
        clock: int = 0,
        *,
        build: Callable[[], list[RoutingSnapshot]] | None = None,
        num_instances: int | None = None,
        members: Sequence[int] | None = None,
    ) -> None:
        self.clock = clock
        self._snapshots = None if snapshots is None else list(snapshots)
        self._build = build
        if num_instances is None:
            num_instances = len(self._snapshots) if self._snapshots is not None else 0
        self.num_instances = num_instances
        #: The cluster-wide index of each snapshot's instance when the router sees only
        #: some instances (an autoscaled pool's ready replicas, one side of a P/D pair),
        #: whose positions shift as that set changes; None: snapshot i is instance i.
        #: What a policy remembers about an instance is keyed by this index.
        self.members: tuple[int, ...] | None = None if members is None else tuple(members)

    def instance(self, position: int) -> int:
        """The cluster-wide index of the instance at ``position`` in :attr:`snapshots`."""
        members = self.members
        return position if members is None else members[position]

    @property
    def snapshots(self) -> list[RoutingSnapshot]:
        snaps = self._snapshots
        if snaps is None:
            snaps = self._build() if self._build is not None else []
            self._snapshots = snaps
        return snaps

    def __len__(self) -> int:
        return self.num_instances


class AdmissionDecision(NamedTuple):
    admitted: bool
    reason: str = ""


@dataclass(slots=True)
class RoutingDecision:
    """Where a request goes and why.

    ``target`` is the instance index (an instance id such as ``"instance_2"`` is
    accepted too). ``scores`` (index order) is filled by scoring policies.
    ``priority`` is a one-shot hint written into the request when non-zero.
    """

    target: int | str
    reason: str = ""
    scores: list[float] | None = None
    priority: float = 0.0


# --- the protocols -----------------------------------------------------------------------


@runtime_checkable
class AdmissionPolicy(Protocol):
    def admit(self, request: Request, state: RouterState) -> bool | tuple[bool, str]: ...


@runtime_checkable
class RoutingPolicy(Protocol):
    def route(self, request: Request, state: RouterState) -> int | str | RoutingDecision: ...


@runtime_checkable
class RoutingScorer(Protocol):
    def score(
        self, request: Request, state: RouterState
    ) -> Sequence[float] | Mapping[str, float]: ...


@runtime_checkable
class PriorityPolicy(Protocol):
    def priority(self, request: Request, now: int) -> float: ...


@runtime_checkable
class Scheduler(Protocol):
    def order(self, wait_queue: deque[Request], now: int) -> None: ...


def target_index(target: Any, num_instances: int, who: str) -> int:
    """Turn a routing target (index or ``instance_<i>`` id) into a checked index."""
    if isinstance(target, str):
        if target.startswith("instance_") and target[9:].isdigit():
            idx = int(target[9:])
        else:
            raise PolicyError(f"routing policy {who} chose unknown instance {target!r}")
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        idx = int(target)  # numpy integers too (np.argmin of scores)
    else:
        raise PolicyError(
            f"routing policy {who} returned {target!r}; expected an instance index, "
            "an instance id or a RoutingDecision"
        )
    if not 0 <= idx < num_instances:
        raise PolicyError(
            f"routing policy {who} chose instance {idx}; valid: 0..{num_instances - 1}"
        )
    return idx
