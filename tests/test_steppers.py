"""The two steppers after the core reshape: which one a configuration builds, what the
fast one keeps per request (nothing once a request has left), and the delivery contract
multi-token steps build on."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.core.request import Request, RequestState
from inference_sim.instance import FastInstance, Instance, make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from simhelpers import make_request, simulate_requests

LATENCY = BlackboxLatencyModel((0.0, 0.0, 0.0), (1000.0, 1.0, 1.0))


def test_exact_steps_builds_the_plain_stepper():
    plain = make_instance(0, EngineConfig(num_gpu_blocks=100, exact_steps=True), LATENCY)
    fast = make_instance(0, EngineConfig(num_gpu_blocks=100), LATENCY)
    assert type(plain) is Instance
    assert type(fast) is FastInstance


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    blocks=st.integers(40, 400),
    gap=st.integers(0, 20_000),
    exact=st.booleans(),
)
def test_no_per_request_state_outlives_the_engine(n, blocks, gap, exact):
    """Finished requests carry no stepper bookkeeping, the plain stepper never attaches
    any, and the fast stepper's order lists hold exactly the running batch."""
    reqs = [make_request(i, i * gap, 20 + (i * 37) % 200, 1 + (i * 13) % 60) for i in range(n)]
    outcome = simulate_requests(reqs, num_gpu_blocks=blocks, exact_steps=exact, max_num_seqs=8)
    for req in reqs:
        if req.state in (RequestState.FINISHED, RequestState.PENDING) or exact:
            assert req.engine_state is None
    for inst in outcome.instances:
        if isinstance(inst, FastInstance):
            assert len(inst._running_seqs) == len(inst.running)
            assert len(inst._prefilling) <= len(inst.running)


def _decoding_request(outputs: int) -> Request:
    req = Request(0, 0, list(range(32)), list(range(outputs)))
    req.num_computed_tokens = req.prefill_target = 32
    return req


def test_deliver_several_tokens_gives_one_itl_sample_per_delivery_event():
    inst = Instance(0, EngineConfig(num_gpu_blocks=100), LATENCY)
    req = _decoding_request(5)
    assert not inst._deliver(req, 1_000)  # first token
    assert req.first_token_time == 1_000 and req.delivered == 1
    assert not inst._deliver(req, 1_400, tokens=3)  # three tokens arrive at once
    assert req.delivered == 4
    assert inst.stats.itl_histogram == {400: 1}  # one gap, as a streaming client sees it
    assert inst._deliver(req, 1_500)  # the last token completes it
    assert inst.stats.total_output_tokens == 5
    assert req.itl_sum == 500


@given(exact=st.booleans())
@settings(max_examples=4, deadline=None)
def test_a_step_whose_every_request_is_dropped_launches_nothing(exact: bool) -> None:
    """A lone request that outgrows a 16-token cache is dropped in the step that cannot
    grow it; that step schedules nothing and costs nothing (vLLM's model runner returns
    at once for an empty schedule), so the run ends with the last real step."""
    req = make_request(0, 0, 4, 30)
    out = simulate_requests(
        [req], beta=(1000.0, 0.0, 0.0), num_gpu_blocks=4, block_size=4, exact_steps=exact
    )
    assert req.state is RequestState.DROPPED and req.delivered == 13
    assert out.end_time == 13 * 1000  # 13 priced steps (prefill + 12 decodes), not 14
