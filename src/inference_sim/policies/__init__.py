"""Admission, routing, scorer, priority and scheduler policies, looked up by name.

Each kind has a :class:`~inference_sim.policies.registry.Registry`; the built-ins
register themselves through it, and a user's class is used by ``module.path:ClassName``
(or ``path/to/file.py:ClassName``, or an entry point in the group
``inference_sim.<kind>``) wherever a built-in name is accepted. See ``docs/policies.md``.
"""

from inference_sim.policies.admission import ADMISSION, AlwaysAdmit, RejectAll, TokenBucket
from inference_sim.policies.base import (
    AdmissionDecision,
    AdmissionPolicy,
    PolicyError,
    PriorityPolicy,
    RouterState,
    RoutingDecision,
    RoutingPolicy,
    RoutingScorer,
    RoutingSnapshot,
    Scheduler,
)
from inference_sim.policies.priority import (
    PRIORITY,
    ConstantPriority,
    InvertedSLOPriority,
    SLOBasedPriority,
)
from inference_sim.policies.registry import Registry, load_object
from inference_sim.policies.routing import (
    ROUTING,
    AlwaysBusiest,
    LeastLoaded,
    PrefixAffinity,
    RoundRobin,
    VllmDataParallel,
    Weighted,
)
from inference_sim.policies.scheduler import (
    FCFS,
    SCHEDULERS,
    PriorityFCFS,
    ReversePriority,
    ShortestJobFirst,
    SortKeyScheduler,
    make_wait_queue_hook,
)
from inference_sim.policies.scorers import (
    DEFAULT_PROFILE,
    SCORERS,
    KVUtilizationScorer,
    LoadBalanceScorer,
    PrefixAffinityScorer,
    QueueDepthScorer,
    parse_scorers,
)

REGISTRIES: dict[str, Registry] = {
    "admission": ADMISSION,
    "routing": ROUTING,
    "scorers": SCORERS,
    "priority": PRIORITY,
    "scheduler": SCHEDULERS,
}

__all__ = [
    "ADMISSION",
    "DEFAULT_PROFILE",
    "FCFS",
    "PRIORITY",
    "REGISTRIES",
    "ROUTING",
    "SCHEDULERS",
    "SCORERS",
    "AdmissionDecision",
    "AdmissionPolicy",
    "AlwaysAdmit",
    "AlwaysBusiest",
    "ConstantPriority",
    "InvertedSLOPriority",
    "KVUtilizationScorer",
    "LeastLoaded",
    "LoadBalanceScorer",
    "PolicyError",
    "PrefixAffinity",
    "PrefixAffinityScorer",
    "PriorityFCFS",
    "PriorityPolicy",
    "QueueDepthScorer",
    "Registry",
    "RejectAll",
    "ReversePriority",
    "RoundRobin",
    "RouterState",
    "RoutingDecision",
    "RoutingPolicy",
    "RoutingScorer",
    "RoutingSnapshot",
    "SLOBasedPriority",
    "Scheduler",
    "ShortestJobFirst",
    "SortKeyScheduler",
    "TokenBucket",
    "VllmDataParallel",
    "Weighted",
    "load_object",
    "make_wait_queue_hook",
    "parse_scorers",
]
