"""Deferred registration of output blocks (Request.outputs_shared=False) changes nothing.

A request whose output tokens no other prompt contains has the blocks that hold its
outputs registered in the prefix cache when it releases them, not one by one as
decoding fills them (the fast stepper then needs no per-block "fill" events). These
properties check, on random workloads and engine configurations, that (1) both steppers
still agree and (2) the results equal eager registration whenever the outputs are in fact
private (token ids no prompt uses).
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings

from inference_sim.instance.request import Request
from test_fast_equivalence import _fingerprint, _simulate, scenarios


def _with_private_outputs(reqs: list[Request], shared: bool) -> list[Request]:
    """Copies whose outputs use token ids no prompt can contain (prompts use < 100)."""
    out = []
    for r in reqs:
        n = r.num_output_tokens
        tokens = [100_000 + r.index * 1_000 + k for k in range(n)]
        out.append(
            Request(r.index, r.arrival_time, r.input_tokens.copy(), tokens, outputs_shared=shared)
        )
    for new, old in zip(out, reqs, strict=True):
        new.itl_group = old.itl_group
    return out


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(scenarios())
def test_deferred_registration_equals_eager_registration(scenario):
    reqs, cfg = scenario
    for exact in (True, False):
        eager = _simulate(_with_private_outputs(reqs, True), exact_steps=exact, **cfg)
        deferred = _simulate(_with_private_outputs(reqs, False), exact_steps=exact, **cfg)
        assert _fingerprint(deferred) == _fingerprint(eager)


@_SETTINGS
@given(scenarios())
def test_steppers_agree_with_deferred_registration(scenario):
    reqs, cfg = scenario
    private = _with_private_outputs(reqs, False)
    plain = _simulate(copy.deepcopy(private), exact_steps=True, **cfg)
    fast = _simulate(copy.deepcopy(private), exact_steps=False, **cfg)
    assert _fingerprint(fast) == _fingerprint(plain)
