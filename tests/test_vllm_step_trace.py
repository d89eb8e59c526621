"""Step-by-step batches against vLLM v0.15.1's scheduler, derived by hand (docs/engine.md).

One small case: 64-token budget, at most 3 running requests, chunked prefill with
vLLM's default ``long_prefill_token_threshold`` (0), every step 10 ms. R0-R2 arrive
together, R3 at 25 ms and R4 at 52 ms. The expected batches are traced through vLLM
v1's ``Scheduler.schedule()`` (running requests first, then the waiting queue; a
waiting request takes a partial chunk when the budget is short; a prefill that
completes in a step emits its first token at the end of that step), once with the
synchronous engine loop and once with async scheduling (vLLM v0.15.1's default),
where the batch of step N+1 is formed when step N starts.
"""

from __future__ import annotations

import pytest

from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.core.batch import StepBatch
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.metrics.summary import ttft_ticks
from simhelpers import make_request

STEP_US = 10_000


class _Recorder(BlackboxLatencyModel):
    """A 10 ms step that writes down what each step schedules."""

    def __init__(self) -> None:
        super().__init__((0.0, 0.0, 0.0), (float(STEP_US), 0.0, 0.0))
        self.steps: list[tuple[dict[str, int], int, int]] = []

    def step_time(self, batch: StepBatch) -> int:
        listed = {f"R{r.index}": n for r, n in zip(batch.requests, batch.num_new, strict=True)}
        self.steps.append((listed, batch.prefill_tokens, batch.decode_tokens))
        return super().step_time(batch)


def _run(async_scheduling: bool, exact_steps: bool) -> tuple[_Recorder, list]:
    reqs = [
        make_request(0, 0, 100, 4),
        make_request(1, 0, 40, 3),
        make_request(2, 0, 20, 2),
        make_request(3, 25_000, 30, 2),
        make_request(4, 52_000, 10, 1),
    ]
    cfg = EngineConfig(
        num_gpu_blocks=1000,
        block_size=16,
        max_num_seqs=3,
        max_num_batched_tokens=64,
        exact_steps=exact_steps,
        async_scheduling=async_scheduling,
    )
    rec = _Recorder()
    sim = ClusterSimulator([make_instance(0, cfg, rec)], check_invariants=True)
    sim.run(reqs)
    return rec, reqs


# vLLM v0.15.1, synchronous loop (--no-async-scheduling): step k runs [10(k-1), 10k) ms.
SYNC = [
    {"R0": 64},  # R0's first chunk takes the whole budget; R1, R2 wait
    {"R0": 36, "R1": 28},  # running first; R1 admitted with a partial chunk
    {"R0": 1, "R1": 12, "R2": 20},  # R0 decodes; R1 finishes its prefill; R2 admitted
    {"R0": 1, "R1": 1, "R2": 1},  # R3 (arrived 25 ms) waits: 3 running = max_num_seqs
    {"R0": 1, "R1": 1, "R3": 30},  # R2 finished at 40 ms: its slot goes to R3
    {"R3": 1},  # R4 arrives at 52 ms, during this step
    {"R4": 10},
]
# vLLM v0.15.1 default (async scheduling): step k+1 is formed when step k starts.
ASYNC = [
    {"R0": 64},
    {"R0": 36, "R1": 28},  # formed at 0 ms, right after step 1
    {"R0": 1, "R1": 12, "R2": 20},
    {"R0": 1, "R1": 1, "R2": 1},
    {"R0": 1, "R1": 1},  # formed at 30 ms: R2 still holds its slot (it ends with step 4)
    {"R3": 30},  # formed at 40 ms; R0 and R1 end with step 5 and take no tokens
    {"R3": 1},  # formed at 50 ms, before R4 arrives
    {"R4": 10},  # R4 seen at 60 ms (end of the step in flight when it arrived)
]
TTFT_MS = {False: [20, 30, 30, 25, 18], True: [20, 30, 30, 35, 28]}


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_plain_stepper_batches_match_vllm(async_scheduling: bool) -> None:
    rec, reqs = _run(async_scheduling, exact_steps=True)
    expected = ASYNC if async_scheduling else SYNC
    assert [listed for listed, _p, _d in rec.steps] == expected
    assert [ttft_ticks(r) // 1000 for r in reqs] == TTFT_MS[async_scheduling]
    # The prefill/decode split the latency model prices.
    for (listed, prefill, decode), want in zip(rec.steps, expected, strict=True):
        assert prefill + decode == sum(want.values())
        assert listed == want


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_fast_stepper_same_steps(async_scheduling: bool) -> None:
    plain, plain_reqs = _run(async_scheduling, exact_steps=True)
    fast, fast_reqs = _run(async_scheduling, exact_steps=False)
    assert [(p, d) for _l, p, d in fast.steps] == [(p, d) for _l, p, d in plain.steps]
    for a, b in zip(plain_reqs, fast_reqs, strict=True):
        assert (a.first_token_time, a.finish_time, a.itl_sum) == (
            b.first_token_time,
            b.finish_time,
            b.itl_sum,
        )


def test_latency_model_can_ask_for_async_scheduling() -> None:
    """A latency model of an async engine (the calibrated one) switches the lag on."""
    cfg = EngineConfig(num_gpu_blocks=10)
    model = BlackboxLatencyModel((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    assert not make_instance(0, cfg, model).async_scheduling

    class AsyncEngineModel(BlackboxLatencyModel):
        async_scheduling = True

    model = AsyncEngineModel((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    assert make_instance(0, cfg, model).async_scheduling


def _run_async(specs: list[tuple[int, int, int]], max_num_seqs: int, exact_steps: bool):
    reqs = [make_request(i, at, prompt, out) for i, (at, prompt, out) in enumerate(specs)]
    cfg = EngineConfig(
        num_gpu_blocks=100,
        block_size=16,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=64,
        exact_steps=exact_steps,
        async_scheduling=True,
    )
    rec = _Recorder()
    ClusterSimulator([make_instance(0, cfg, rec)], check_invariants=True).run(reqs)
    return rec, reqs


@pytest.mark.parametrize("exact_steps", [True, False], ids=["plain", "fast"])
def test_async_slot_held_by_a_last_token_in_flight(exact_steps: bool) -> None:
    """No running request is in step 4, but vLLM formed it at 20 ms (when step 3
    started): R1's last token was in flight, so R1 still held one of the two slots and
    only R2 was admitted; R3 waits for step 5."""
    specs = [(0, 10, 2), (0, 10, 3), (1_000, 10, 2), (1_000, 10, 2)]
    rec, reqs = _run_async(specs, max_num_seqs=2, exact_steps=exact_steps)
    if exact_steps:
        assert [listed for listed, _p, _d in rec.steps] == [
            {"R0": 10, "R1": 10},
            {"R0": 1, "R1": 1},
            {"R1": 1},  # formed at 10 ms: R0's last token in flight, R0 holds its slot
            {"R2": 10},  # formed at 20 ms: R0 freed, R1 still holds a slot
            {"R2": 1, "R3": 10},
            {"R3": 1},
        ]
    assert [ttft_ticks(r) // 1000 for r in reqs] == [10, 10, 39, 49]


@pytest.mark.parametrize("exact_steps", [True, False], ids=["plain", "fast"])
def test_async_batch_formed_in_advance_admits_what_it_saw(exact_steps: bool) -> None:
    """R1 arrives during step 2 and R2 during step 3. Step 4 was formed when step 3
    started (20 ms): it admits R1, not R2 (arrived at 25 ms), though no running request
    is in it; R2 joins step 5."""
    specs = [(0, 10, 3), (15_000, 10, 2), (25_000, 10, 2)]
    rec, reqs = _run_async(specs, max_num_seqs=8, exact_steps=exact_steps)
    if exact_steps:
        assert [listed for listed, _p, _d in rec.steps] == [
            {"R0": 10},
            {"R0": 1},
            {"R0": 1},
            {"R1": 10},
            {"R1": 1, "R2": 10},
            {"R2": 1},
        ]
    assert [ttft_ticks(r) // 1000 for r in reqs] == [10, 25, 25]


@pytest.mark.parametrize("exact_steps", [True, False], ids=["plain", "fast"])
@pytest.mark.parametrize(("arrival", "ttft"), [(100_000, 10), (15_000, 15)])
def test_async_an_idle_engine_has_every_slot_free(exact_steps: bool, arrival: int, ttft: int):
    """R0 and R1 finish in step 2 and the engine goes idle (the batch formed ahead of
    step 2 was empty). vLLM then blocks on step 2, whose output removes R0 and R1 from
    the running set, before it sees R2-R4: all three fit the 3 slots of step 3, whether
    they arrive after the idle spell or during the last step (only R2 fitted before)."""
    specs = [(0, 10, 2), (0, 10, 2), (arrival, 10, 2), (arrival, 10, 2), (arrival, 10, 2)]
    rec, reqs = _run_async(specs, max_num_seqs=3, exact_steps=exact_steps)
    assert [listed for listed, _p, _d in rec.steps][2] == {"R2": 10, "R3": 10, "R4": 10}
    assert [ttft_ticks(r) // 1000 for r in reqs] == [10, 10, ttft, ttft, ttft]
