"""Deferred registration of private blocks (Request.private_from) changes nothing.

A request whose output tokens no other prompt contains has the blocks that hold its
outputs registered in the prefix cache when it releases them, not one by one as
decoding fills them (the fast stepper then needs no per-block "fill" events). These
properties check, on random workloads and engine configurations, that (1) both steppers
still agree and (2) the results equal eager registration whenever the outputs are in fact
private (token ids no prompt uses) and no request is preempted twice.

The one case where they may differ, by design: a request recomputed after a preemption
writes blocks whose hashes an older copy still holds in the free queue; if that copy is
evicted before the request ends, eager registration has lost the hash (the index keeps
one holder per hash and the new block was refused while the old one held it), deferred
registration indexes the new block when the request releases it. Only the same request,
preempted again, can look the hash up, so the results agree unless some request is
preempted twice; vLLM keeps every holder of a hash, so it behaves like the deferred case.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_sim.core.request import Request
from test_fast_equivalence import _fingerprint, _simulate, scenarios


def _with_private_outputs(reqs: list[Request], shared: bool, tail: int = 0) -> list[Request]:
    """Copies whose outputs (and, with ``tail``, a prompt suffix of up to ``tail`` tokens)
    use token ids no other prompt contains (the drawn prompts use ids < 100)."""
    out = []
    for r in reqs:
        n = r.num_output_tokens
        tokens = [100_000 + r.index * 1_000 + k for k in range(n)]
        own = (r.index * 7) % (tail + 1)
        prompt = [*r.input_tokens.tolist(), *(200_000 + r.index * 1_000 + k for k in range(own))]
        out.append(
            Request(
                r.index,
                r.arrival_time,
                prompt,
                tokens,
                private_from=-1 if shared else r.num_prompt_tokens,
            )
        )
    for new, old in zip(out, reqs, strict=True):
        new.itl_group = old.itl_group
    return out


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(scenarios(), st.sampled_from([0, 0, 5, 16, 40]))
def test_deferred_registration_equals_eager_registration(scenario, tail):
    reqs, cfg = scenario
    for exact in (True, False):
        eager = _simulate(_with_private_outputs(reqs, True, tail), exact_steps=exact, **cfg)
        deferred = _simulate(_with_private_outputs(reqs, False, tail), exact_steps=exact, **cfg)
        if max((r.num_preemptions for r in eager.requests), default=0) <= 1:
            assert _fingerprint(deferred) == _fingerprint(eager)


@_SETTINGS
@given(scenarios(), st.sampled_from([0, 5, 16, 40]))
def test_steppers_agree_with_deferred_registration(scenario, tail):
    reqs, cfg = scenario
    private = _with_private_outputs(reqs, False, tail)
    plain = _simulate(copy.deepcopy(private), exact_steps=True, **cfg)
    fast = _simulate(copy.deepcopy(private), exact_steps=False, **cfg)
    assert _fingerprint(fast) == _fingerprint(plain)


@st.composite
def roomy_scenarios(draw):
    """Caches large enough that the fast stepper opens decoders' blocks in bulk."""
    reqs, cfg = draw(scenarios())
    cfg["num_gpu_blocks"] = draw(st.sampled_from([20, 40, 80, 160, 400, 3000]))
    cfg["max_num_batched_tokens"] = draw(st.integers(4, 64))
    cfg.pop("tier", None)
    extra = draw(st.lists(st.integers(1, 300), min_size=0, max_size=30))
    t = reqs[-1].arrival_time
    for i, out in enumerate(extra, start=len(reqs)):
        t += draw(st.sampled_from([0, 200, 2000, 9000]))
        reqs.append(Request(i, t, [i % 50, (i * 3) % 50, 7], [0] * out))
    return reqs, cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(roomy_scenarios(), st.sampled_from([0, 5, 16, 40]))
def test_bulk_block_opens_equal_the_plain_stepper(scenario, tail):
    reqs, cfg = scenario
    private = _with_private_outputs(reqs, False, tail)
    plain = _simulate(copy.deepcopy(private), exact_steps=True, **cfg)
    fast = _simulate(copy.deepcopy(private), exact_steps=False, **cfg)
    assert _fingerprint(fast) == _fingerprint(plain)
    # Block-time integral and peak: the bulk opens must keep KV use exact at every step.
    kv_use = [
        [(i.stats.kv_block_time, i.stats.peak_kv_blocks) for i in o.instances]
        for o in (fast, plain)
    ]
    assert kv_use[0] == kv_use[1]
