"""``--no-enable-chunked-prefill`` (vLLM v1's ``enable_chunked_prefill=False``) and the
``max_num_batched_tokens >= max_num_seqs`` start-up rule (docs/engine.md).

vLLM's waiting loop (vllm/v1/core/sched/scheduler.py) caps a request's new tokens by
``long_prefill_token_threshold``, then, with chunking off, stops admission when they
exceed the budget left; ``SchedulerConfig.verify_max_model_len`` (vllm/config/
scheduler.py) refuses ``max_num_batched_tokens < max_model_len`` with chunking off and
``max_num_batched_tokens < max_num_seqs`` always.
"""

from __future__ import annotations

import copy
import logging
import random

import pytest

import test_fast_equivalence as fe
from inference_sim import simulate
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.config.errors import ConfigError
from inference_sim.config.resolve import resolve
from inference_sim.core.batch import StepBatch
from inference_sim.core.request import Request, RequestState
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.speculative import SpeculativeConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from simhelpers import make_request

MODEL = "meta-llama/llama-3.1-8b-instruct"
LATENCY = BlackboxLatencyModel((0.0, 0.0, 0.0), (1000.0, 0.0, 0.0))


def _steps(chunked: bool, prompts: list[int], steps: int, **engine: object) -> list[list]:
    """(request index, tokens) scheduled in each of the first ``steps`` steps of one plain
    instance, every request arriving at 0 with 3 output tokens."""
    cfg = EngineConfig(
        num_gpu_blocks=100,
        block_size=4,
        enable_chunked_prefill=chunked,
        exact_steps=True,
        **engine,  # type: ignore[arg-type]
    )
    inst = make_instance(0, cfg, LATENCY)
    for i, p in enumerate(prompts):
        inst.enqueue(make_request(i, 0, p, 3), 0)
    t, out = 0, []
    for _ in range(steps):
        batch = inst.schedule(t)
        out.append([(r.index, n) for r, n in zip(batch.requests, batch.num_new, strict=True)])
        end = inst.execute(batch, t)
        inst.apply(batch, end)
        t = end
    return out


def test_a_prompt_that_does_not_fit_the_budget_left_waits_for_the_next_step():
    """Budget 16, two prompts of 10: chunked, the second gets the 6 tokens left in step 1;
    off, it waits and is scheduled whole in step 2 (16 - 1 decode token = 15 >= 10)."""
    on = _steps(True, [10, 10], 2, max_num_batched_tokens=16)
    off = _steps(False, [10, 10], 2, max_num_batched_tokens=16)
    assert on == [[(0, 10), (1, 6)], [(0, 1), (1, 4)]]
    assert off == [[(0, 10)], [(0, 1), (1, 10)]]


def test_the_threshold_cuts_first_then_the_whole_chunk_must_fit():
    """vLLM applies long_prefill_token_threshold before the chunked-prefill check: with
    threshold 8 a prompt of 10 asks for 8 tokens; 4 left of 12 is not enough (off: it
    waits), 8 left of 16 is (it gets an 8-token chunk even with chunking off)."""
    on = _steps(True, [10, 10], 1, max_num_batched_tokens=12, long_prefill_token_threshold=8)
    off = _steps(False, [10, 10], 1, max_num_batched_tokens=12, long_prefill_token_threshold=8)
    assert on == [[(0, 8), (1, 4)]]
    assert off == [[(0, 8)]]
    fits = _steps(False, [10, 10], 2, max_num_batched_tokens=16, long_prefill_token_threshold=8)
    assert fits == [[(0, 8), (1, 8)], [(0, 2), (1, 2)]]


def test_speculative_decoding_admits_by_the_same_rule():
    """SpecInstance shares the plain stepper's admission: the second prompt waits."""
    spec = SpeculativeConfig("ngram", 2, (0.5, 0.5))
    off = _steps(False, [10, 10], 2, max_num_batched_tokens=16, speculative=spec)
    assert off[0] == [(0, 10)]
    assert (1, 10) in off[1]


def _random_case(rng: random.Random) -> tuple[list[Request], dict]:
    n = rng.randint(2, 30)
    shared = [rng.randint(0, 9) for _ in range(rng.randint(0, 32))]
    reqs, t = [], 0
    for i in range(n):
        t += rng.choice([0, 0, 0, 1, 500, 3000, 20000])
        own = [rng.randint(0, 40) for _ in range(rng.randint(1, 60))]
        prompt = (shared if rng.random() < 0.5 else []) + own
        out = rng.randint(0, 40)
        reqs.append(Request(i, t, prompt, [(i * 7 + k) % 97 for k in range(out)]))
        if rng.random() < 0.3:
            reqs[-1].itl_group = rng.choice([0, 1])
    cfg = dict(
        num_gpu_blocks=rng.randint(8, 400),
        block_size=rng.choice([1, 2, 4, 16]),
        max_num_seqs=rng.randint(2, 12),
        max_num_batched_tokens=rng.randint(24, 200),
        long_prefill_token_threshold=rng.choice([0, 0, 0, 8, 33]),
        enable_prefix_caching=rng.random() < 0.5,
        async_scheduling=rng.random() < 0.3,
    )
    if rng.random() < 0.3:
        cfg.update(kv_cpu_blocks=rng.choice([3, 40, 400]), kv_offload_threshold=0.5)
    sim = dict(
        num_instances=rng.randint(1, 3),
        # As a resolved run sets it (the budget), or none (the engine's own safety net).
        max_model_len=rng.choice([0, cfg["max_num_batched_tokens"]]),
        horizon=rng.choice([2**63 - 1, 2**63 - 1, 40_000, 150_000]),
    )
    return reqs, {"engine": cfg, "sim": sim}


def _run(reqs: list[Request], case: dict, *, exact_steps: bool):
    engine = EngineConfig(enable_chunked_prefill=False, exact_steps=exact_steps, **case["engine"])
    s = case["sim"]
    latency = BlackboxLatencyModel((0.0, 0.0, 0.0), (1000.0, 3.3, 1.0))
    instances = [make_instance(i, engine, latency) for i in range(s["num_instances"])]
    sim = ClusterSimulator(
        instances, horizon=s["horizon"], max_model_len=s["max_model_len"], check_invariants=True
    )
    return sim.run(reqs)


def test_fast_stepper_equals_plain_stepper_with_chunking_off():
    rng = random.Random(20260)
    for _ in range(80):  # about a third differ from the same runs with chunking on
        reqs, case = _random_case(rng)
        plain = _run(copy.deepcopy(reqs), case, exact_steps=True)
        fast = _run(copy.deepcopy(reqs), case, exact_steps=False)
        assert fe._fingerprint(fast) == fe._fingerprint(plain), case
        fe._check_groups(plain)


def test_every_prefill_is_scheduled_whole_new_or_resumed():
    """Threshold 0, chunking off: every prefill scheduled finishes its prompt (+ tokens
    delivered, for a request resumed after a preemption) in that step. Small KV caches
    make preemptions (recompute) common."""
    rng = random.Random(7)
    resumed = 0
    for _ in range(60):
        reqs, case = _random_case(rng)
        case["engine"].update(long_prefill_token_threshold=0, async_scheduling=False)
        case["engine"].pop("kv_cpu_blocks", None)
        case["engine"].pop("kv_offload_threshold", None)
        engine = EngineConfig(enable_chunked_prefill=False, exact_steps=True, **case["engine"])
        inst = make_instance(0, engine, LATENCY)
        schedule = inst.schedule

        def checked(now: int, schedule=schedule) -> StepBatch:
            nonlocal resumed
            batch = schedule(now)
            for r, n in zip(batch.requests, batch.num_new, strict=True):
                if r.num_computed_tokens < r.prefill_target:
                    assert r.num_computed_tokens + n == r.prefill_target
                    resumed += r.delivered > 0
            return batch

        inst.schedule = checked  # type: ignore[method-assign]
        budget = engine.max_num_batched_tokens
        pending = [r for r in reqs if r.num_prompt_tokens + r.num_output_tokens <= budget]
        for r in pending:
            inst.enqueue(r, 0)
        t: int | None = 0
        for _step in range(5000):
            if t is None:
                break
            t = inst.step(t)
        else:
            pytest.fail("the run did not end")
        assert all(r.state in (RequestState.FINISHED, RequestState.DROPPED) for r in pending)
    assert resumed > 0  # the cases do recompute preempted decoders


def _lengths(*rows: tuple[int, int]) -> list[dict[str, int]]:
    return [{"prompt_len": i, "output_len": o} for i, o in rows]


def test_requests_longer_than_the_budget_are_rejected_as_too_long():
    """Without --max-model-len the limit is the budget: the three requests over 512 tokens
    (prompt + output: 513, 610, 600) are rejected at arrival and counted as
    --max-model-len 512 counts them; the others run. Results record the 0 given and chunking off."""
    rows = _lengths((400, 100), (500, 13), (600, 10), (100, 500), (200, 20))
    run = dict(model=MODEL, workload="traces", max_num_batched_tokens=512, rate=5)
    off = simulate(trace=rows, enable_chunked_prefill=False, **run)
    capped = simulate(trace=rows, max_model_len=512, **run)
    on = simulate(trace=rows, **run)
    assert off.summary["rejected_too_long"] == capped.summary["rejected_too_long"] == 3
    assert off.summary["completed_requests"] == 2
    assert on.summary["rejected_too_long"] == 0 and on.summary["completed_requests"] == 5
    assert off.config["max_model_len"] == 0
    assert off.config["enable_chunked_prefill"] is False
    assert "enable_chunked_prefill" not in on.config  # results of default runs unchanged


def test_the_length_limit_is_said_at_info_level():
    plan = resolve(dict(model=MODEL, enable_chunked_prefill=False, max_num_batched_tokens=1024))
    assert plan.options["max_model_len"] == 1024
    assert any("length limit is --max-num-batched-tokens 1024" in n for n in plan.notes)
    assert resolve(dict(model=MODEL)).options["max_model_len"] == 0


def test_a_max_model_len_over_the_budget_is_refused_with_chunking_off():
    with pytest.raises(ConfigError) as err:
        resolve(dict(model=MODEL, enable_chunked_prefill=False, max_model_len=4096))
    msg = str(err.value)
    assert "\n" not in msg
    assert "--max-model-len 4096" in msg and "--max-num-batched-tokens 2048" in msg
    ok = resolve(dict(model=MODEL, enable_chunked_prefill=False, max_model_len=2048))
    assert ok.options["max_model_len"] == 2048 and not ok.length_limit_from_budget
    # Chunking on: any length (vLLM chunks what the budget does not hold).
    resolve(dict(model=MODEL, max_model_len=4096))


def test_pd_pools_follow_the_flag():
    """Each pool's budget counts: a decode pool with a smaller budget is refused by name,
    and without --max-model-len the smallest budget in use is the limit."""
    pd = dict(
        model=MODEL, num_instances=3, prefill_instances=1, decode_instances=2, num_requests=60
    )
    with pytest.raises(ConfigError, match="--decode-max-num-batched-tokens 1024"):
        resolve(
            dict(
                pd,
                enable_chunked_prefill=False,
                max_model_len=2048,
                decode_max_num_batched_tokens=1024,
            )
        )
    plan = resolve(
        dict(
            pd,
            enable_chunked_prefill=False,
            max_num_batched_tokens=512,  # no dual-role instance: not in use
            prefill_max_num_batched_tokens=4096,
            decode_max_num_batched_tokens=3000,
        )
    )
    assert plan.options["max_model_len"] == 3000
    assert all(not p.engine.enable_chunked_prefill for p in [plan, *plan.pools.values()])
    res = simulate(pd, enable_chunked_prefill=False)
    assert res.summary["completed_requests"] + res.summary["rejected_too_long"] == 60
    assert res.summary["completed_requests"] > 0


def test_a_budget_below_max_num_seqs_is_warned_about(sim_log):
    resolve(dict(model=MODEL, max_num_batched_tokens=64))
    lines = [r.getMessage() for r in sim_log.records if r.levelno == logging.WARNING]
    hits = {m for m in lines if "--max-num-seqs 256" in m}  # (caplog may see it twice)
    assert len(hits) == 1, lines
    (hit,) = hits
    assert "\n" not in hit
    assert "--max-num-batched-tokens 64" in hit and "vLLM refuses to start" in hit


def test_default_runs_are_not_warned_about_the_budget(sim_log):
    resolve(dict(model=MODEL))
    resolve(dict(model=MODEL, max_num_seqs=2048))  # equal is fine
    assert not [r for r in sim_log.records if "--max-num-seqs" in r.getMessage()]


def test_the_too_long_warning_names_the_budget_with_chunking_off(tmp_path):
    """A request rejected by the limit the budget sets is not blamed on --max-model-len
    alone, which the user never gave."""
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,3000,3\n0,100,3\n")
    args = ["run", "--model", "meta-llama/llama-3.1-8b-instruct", "--workload", "traces",
            "--workload-traces-filepath", str(trace)]  # fmt: skip
    off = CliRunner().invoke(cli, [*args, "--no-enable-chunked-prefill"])
    assert off.exit_code == 0, off.output
    assert "at most --max-num-batched-tokens) 2048" in off.stderr
    on = CliRunner().invoke(cli, [*args, "--max-model-len", "2048"])
    assert "over --max-model-len 2048: raise it" in on.stderr
