"""A custom routing policy and a custom scorer, usable from the CLI and policy bundles.

    blis run --model meta-llama/llama-3.1-8b-instruct --num-instances 4 \\
        --routing-policy examples/custom_routing.py:LeastWork

A routing policy is any class with ``route(request, state)``; ``state.snapshots`` has
one :class:`~inference_sim.policies.RoutingSnapshot` per instance (queue depth, batch
size, KV utilisation, free KV blocks, cache hit rate, pending requests) and
``state.clock`` is the simulated time in µs. Return the chosen instance index (or a
``RoutingDecision`` with a reason). Constructor arguments named ``block_size`` or
``num_instances`` are filled in by the simulator.
"""

from __future__ import annotations

from inference_sim.policies import RoutingDecision


class LeastWork:
    """Send the request where the least work is in flight.

    Round-robin ignores how busy an instance is. This policy picks the fewest requests
    queued, running or on their way (the snapshot's effective load); among equally
    loaded instances it prefers the emptier KV cache (fewer tokens in flight, so
    shorter steps). Remaining ties go to the lowest index.
    """

    def route(self, request, state):
        best = min(
            state.snapshots,
            key=lambda s: (s.effective_load, s.kv_utilization, s.index),
        )
        return RoutingDecision(best.index, "least-work")


class FreeBlocksScorer:
    """A scorer for ``--routing-policy weighted``: share of free KV blocks (1 = emptiest).

    --routing-scorers "examples/custom_routing.py:FreeBlocksScorer:1,queue-depth:1"
    """

    def score(self, request, state):
        most = max(s.free_kv_blocks for s in state.snapshots) or 1
        return [s.free_kv_blocks / most for s in state.snapshots]
