"""Speculative decoding (docs/speculative-decoding.md): scheduling, acceptance, cost, metrics.

The engine-level tests drive :class:`SpecInstance` directly with a blackbox model whose
coefficients make step times easy to reason about; the physics tests run the roofline
model end to end through ``simulate()``, as a user would.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_sim import simulate
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.core.batch import StepBatch
from inference_sim.core.request import Request, RequestState
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.engine import Instance
from inference_sim.instance.speculative import SpecInstance, SpeculativeConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from simhelpers import make_request

MODEL = "qwen/qwen2.5-7b-instruct"


class BudgetSpy(BlackboxLatencyModel):
    """A blackbox model that records every batch's scheduled tokens."""

    def __init__(self, beta: tuple[float, float, float]) -> None:
        super().__init__((0.0, 0.0, 0.0), beta)
        self.steps: list[list[int]] = []

    def step_time(self, batch: StepBatch) -> int:
        self.steps.append(list(batch.num_new))
        return super().step_time(batch)


def _engine(spec: SpeculativeConfig | None, **kw: int) -> EngineConfig:
    return EngineConfig(
        num_gpu_blocks=kw.get("blocks", 20_000),
        block_size=kw.get("block_size", 16),
        max_num_seqs=kw.get("seqs", 64),
        max_num_batched_tokens=kw.get("budget", 2048),
        speculative=spec,
    )


def _spec(
    k: int, rates: list[float] | float, method: str = "ngram", seed: int = 1
) -> SpeculativeConfig:
    acc = tuple(rates) if isinstance(rates, list) else (float(rates),) * k
    return SpeculativeConfig(method=method, num_tokens=k, acceptance=acc, seed=seed)


# ------------------------------------------------------------------ conservation


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 5),
    rates=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    reqs=st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(1, 200), st.integers(1, 60)),
        min_size=1,
        max_size=12,
    ),
    budget=st.integers(2, 300),
    blocks=st.integers(20, 200),
    method=st.sampled_from(["ngram", "eagle"]),
    seed=st.integers(0, 3),
    horizon=st.sampled_from([None, 5_000, 50_000]),
)
def test_tokens_conserved_with_multi_token_steps(
    k: int,
    rates: list[float],
    reqs: list[tuple[int, int, int]],
    budget: int,
    blocks: int,
    method: str,
    seed: int,
    horizon: int | None,
) -> None:
    """Every finished request delivers exactly its output tokens; no step exceeds the
    token budget or asks for more than 1 + k tokens per decoder; KV and request
    invariants hold throughout (the simulator's checks are on); the ITL histogram holds
    the samples of the finished requests only (cut by a horizon or dropped: none)."""
    spec = SpeculativeConfig(
        method=method, num_tokens=k, acceptance=tuple(rates[:k]), seed=seed, head_fraction=0.05
    )
    spy = BudgetSpy((500.0, 1.0, 10.0))
    inst = make_instance(0, _engine(spec, budget=budget, blocks=blocks, seqs=8), spy)
    assert isinstance(inst, SpecInstance)
    requests = [
        make_request(i, arr, p, o) for i, (arr, p, o) in enumerate(sorted(reqs, key=lambda r: r[0]))
    ]
    cut = {} if horizon is None else {"horizon": horizon}
    ClusterSimulator([inst], check_invariants=True, **cut).run(requests)
    finished = [r for r in requests if r.state == RequestState.FINISHED]
    if horizon is None:
        for r in requests:
            assert r.state in (RequestState.FINISHED, RequestState.DROPPED)
    for r in finished:
        assert r.delivered == r.num_output_tokens
    stats = inst.stats
    hist = stats.itl_histogram
    assert all(c > 0 for c in hist.values())
    assert sum(v * c for v, c in hist.items()) == sum(r.itl_sum for r in finished)
    assert stats.total_output_tokens == sum(r.delivered for r in requests)
    assert stats.spec_accepted_tokens <= stats.spec_draft_tokens
    assert stats.spec_draft_tokens <= k * stats.spec_request_steps
    for step in spy.steps:
        assert sum(step) <= budget
    if horizon is None:
        assert inst.running == [] and inst.kv.num_used == 0  # no KV leak


def test_draft_tokens_are_cut_first_when_the_budget_is_short() -> None:
    """Two decoders, k = 4, budget 7: the first gets 1 + 4, the second 1 + 1."""
    spy = BudgetSpy((100.0, 1.0, 1.0))
    inst = SpecInstance(0, _engine(_spec(4, 1.0), budget=7), spy)
    a, b = make_request(0, 0, 5, 50), make_request(1, 0, 5, 50)
    inst.enqueue(a, 0)
    inst.enqueue(b, 0)
    end = inst.step(0)  # both prefills (10 tokens > 7: the second one is chunked)
    while end is not None and not (a.delivered and b.delivered):
        end = inst.step(end)
    assert end is not None
    inst.step(end)
    assert spy.steps[-1] == [5, 2]


def test_no_speculation_past_the_output_length_and_prefills_not_speculated() -> None:
    spy = BudgetSpy((100.0, 1.0, 1.0))
    inst = SpecInstance(0, _engine(_spec(5, 1.0)), spy)
    req = make_request(0, 0, 40, 4)
    ClusterSimulator([inst], check_invariants=True).run([req])
    # prefill (40 tokens, 1 delivered), then 3 left: one step of 1 + 2 tokens.
    assert spy.steps == [[40], [3]]
    assert req.delivered == 4
    # One delivery event after the first token: one ITL sample.
    assert sum(inst.stats.itl_histogram.values()) == 1


@pytest.mark.parametrize("k", [1, 3, 5])
def test_lookahead_slots_stop_at_the_last_token(k: int) -> None:
    """A request that exactly fills the cache (100 + 60 tokens in 10 blocks of 16) finishes
    under EAGLE: the k lookahead slots never reach past its last token (vLLM caps them at
    max_model_len, which its start-up check fits in the cache)."""
    spec = SpeculativeConfig(method="eagle", num_tokens=k, acceptance=(1.0,) * k)
    inst = SpecInstance(0, _engine(spec, blocks=10), BudgetSpy((100.0, 1.0, 1.0)))
    req = make_request(0, 0, 100, 60)
    out = ClusterSimulator([inst], check_invariants=True).run([req])
    assert req.state is RequestState.FINISHED and req.delivered == 60
    assert not any(i.stats.dropped_unservable for i in out.instances)


def test_long_drafts_with_block_hashing_run() -> None:
    """k lookahead slots past the sequence end made the CPU tier's block hashing index
    past the last token (IndexError); capped, the run completes every request."""
    summary, _ = _run(
        speculative_method="eagle", num_speculative_tokens=20, kv_cpu_blocks=100, num_requests=20
    )
    assert summary["completed_requests"] == 20


def test_one_itl_sample_per_delivery_event() -> None:
    inst = SpecInstance(0, _engine(_spec(3, 1.0)), BudgetSpy((100.0, 1.0, 1.0)))
    req = make_request(0, 0, 16, 9)  # first token, then 4 + 4
    ClusterSimulator([inst], check_invariants=True).run([req])
    assert sum(inst.stats.itl_histogram.values()) == 2
    assert inst.stats.spec_request_steps == 2


def test_zero_acceptance_and_free_drafts_match_the_plain_engine() -> None:
    """α = 0 with unpriced extra tokens (beta1 = 0, n-gram at 0 µs) is the plain engine."""
    beta = (300.0, 0.0, 7.0)

    def run(spec: SpeculativeConfig | None) -> list[tuple[int, int, int]]:
        lat = BlackboxLatencyModel((0.0, 0.0, 0.0), beta)
        inst = (
            make_instance(0, _engine(spec, budget=512), lat)
            if spec
            else Instance(0, _engine(None, budget=512), lat)
        )
        reqs = [make_request(i, i * 997, 30 + 13 * i, 5 + 7 * i) for i in range(15)]
        ClusterSimulator([inst], check_invariants=True).run(reqs)
        return [(r.first_token_time, r.finish_time, r.itl_sum) for r in reqs]

    assert run(_spec(3, 0.0)) == run(None)


# ------------------------------------------------------------------ determinism


def _run(**kw: object) -> tuple[dict[str, object], list[dict[str, object]]]:
    base: dict[str, object] = dict(
        model=MODEL, latency_model="roofline", num_requests=40, rate=8.0, seed=7
    )
    base.update(kw)
    res = simulate(**base)
    return dict(res.summary), [dict(r) for r in res.records]


def test_same_seed_same_results_and_another_seed_other_draws() -> None:
    spec = dict(speculative_method="eagle", num_speculative_tokens=3)
    assert _run(**spec) == _run(**spec)
    a, _ = _run(**spec)
    b, _ = _run(seed=8, **spec)
    assert (
        a["spec_draft_tokens"] != b["spec_draft_tokens"]
        or a["spec_acceptance_rate"] != (b["spec_acceptance_rate"])
    )


def test_summary_keys_only_when_on() -> None:
    off, _ = _run()
    on, _ = _run(speculative_method="mtp", num_speculative_tokens=2)
    assert not any(key.startswith("spec_") for key in off)
    assert 0.0 < float(on["spec_acceptance_rate"]) < 1.0
    assert on["spec_tokens_per_step"] == pytest.approx(1.0 + float(on["spec_mean_accepted_tokens"]))


def test_per_position_rates() -> None:
    """Rates 1, 1, 0: every speculating step accepts exactly the first two drafts."""
    s, _ = _run(speculative_method="eagle", num_speculative_tokens=3, spec_acceptance_rate="1,1,0")
    assert 1.9 < float(s["spec_mean_accepted_tokens"]) <= 2.0


def _per_request_acceptance(records: list[dict[str, object]]) -> list[float]:
    """Per-request TPOT (ms) of the requests with more than 20 output tokens."""
    return [float(r["itl_ms"]) for r in records if int(r["num_decode_tokens"]) > 20]


def test_per_request_rates_are_beta_draws_keyed_by_request() -> None:
    """Each request's rate per position is a Beta draw with the given mean; it depends on
    the request, not on the instance that serves it."""
    spec = SpeculativeConfig(
        method="eagle", num_tokens=2, acceptance=(0.6, 1.0), concentration=2.0, seed=3
    )
    latency = BlackboxLatencyModel((0.0, 0.0, 0.0), (1000.0, 1.0, 1.0))
    first = make_instance(0, _engine(spec), latency)
    second = make_instance(1, _engine(spec), latency)
    reqs = [Request(i, 0, [1, 2, 3], [4, 5]) for i in range(3000)]
    rates = [first._rates_of(r) for r in reqs]  # type: ignore[attr-defined]
    assert [second._rates_of(r) for r in reqs[:50]] == rates[:50]  # type: ignore[attr-defined]
    firsts = [r[0] for r in rates]
    assert sum(firsts) / len(firsts) == pytest.approx(0.6, abs=0.02)
    # Beta(1.2, 0.8): variance m(1-m)/(c+1) = 0.08.
    var = sum((x - 0.6) ** 2 for x in firsts) / len(firsts)
    assert var == pytest.approx(0.08, abs=0.01)
    assert all(r[1] == 1.0 for r in rates)  # a rate of 0 or 1 stays as it is


def test_per_request_acceptance_spreads_requests() -> None:
    """With a concentration, runs stay deterministic and requests spread further apart
    (per-request TPOT) than with one shared rate."""
    spec = dict(
        speculative_method="eagle",
        num_speculative_tokens=3,
        spec_acceptance_rate="0.6",
        num_requests=300,
        rate=2.0,
    )
    _, shared_records = _run(**spec)
    spread, spread_records = _run(spec_acceptance_concentration=2.0, **spec)
    assert (spread, spread_records) == _run(spec_acceptance_concentration=2.0, **spec)

    def stdev(values: list[float]) -> float:
        mean = sum(values) / len(values)
        return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5

    tpot_shared = _per_request_acceptance(shared_records)
    tpot_spread = _per_request_acceptance(spread_records)
    assert stdev(tpot_spread) > 3 * stdev(tpot_shared)


# ------------------------------------------------------------------ physics


def _tpot(**kw: object) -> float:
    s, _ = _run(**kw)
    return float(s["tpot_mean_ms"])


@pytest.mark.parametrize("method", ["ngram", "eagle", "mtp"])
@pytest.mark.parametrize("rate", [2.0, 60.0])
def test_zero_acceptance_is_never_faster(method: str, rate: float) -> None:
    base = _tpot(rate=rate)
    spec = _tpot(
        rate=rate, speculative_method=method, num_speculative_tokens=4, spec_acceptance_rate=0.0
    )
    assert spec >= base


def test_full_acceptance_with_cheap_drafting_divides_tpot_by_k_plus_one() -> None:
    k = 3
    base = _tpot(rate=0.5, num_requests=10)
    spec = _tpot(
        rate=0.5, num_requests=10, speculative_method="ngram", num_speculative_tokens=k,
        spec_acceptance_rate=1.0,
    )  # fmt: skip
    assert base / (k + 1) <= spec <= 1.2 * base / (k + 1)


def test_gain_shrinks_at_high_load() -> None:
    kw = dict(speculative_method="eagle", num_speculative_tokens=4, spec_acceptance_rate=0.8)
    low = _tpot(rate=0.5, num_requests=10) / _tpot(rate=0.5, num_requests=10, **kw)
    high = _tpot(rate=200.0, num_requests=150) / _tpot(rate=200.0, num_requests=150, **kw)
    assert low > 1.5
    assert high < low


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--speculative-method", "eagle", "--num-speculative-tokens", "0"],
            "--num-speculative-tokens",
        ),
        (
            ["--speculative-method", "eagle"],  # k left out: said so, not "got 0"
            "--speculative-method eagle needs --num-speculative-tokens K",
        ),
        (
            ["--speculative-method", "eagle", "--num-speculative-tokens", "-2"],
            "--num-speculative-tokens",
        ),
        (
            [
                "--speculative-method",
                "eagle",
                "--num-speculative-tokens",
                "2",
                "--spec-acceptance-rate",
                "1.2",
            ],
            "--spec-acceptance-rate",
        ),
        (
            [
                "--speculative-method",
                "eagle",
                "--num-speculative-tokens",
                "2",
                "--spec-acceptance-rate",
                "-0.1",
            ],
            "--spec-acceptance-rate",
        ),
        (
            ["--speculative-method", "medusa", "--num-speculative-tokens", "2"],
            "--speculative-method",
        ),
        (
            ["--speculative-method", "draft-model", "--num-speculative-tokens", "2"],
            "--speculative-model",
        ),
        (["--num-speculative-tokens", "2"], "--speculative-method"),
        (
            [
                "--speculative-method",
                "eagle",
                "--num-speculative-tokens",
                "2",
                "--spec-acceptance-concentration",
                "-1",
            ],
            "--spec-acceptance-concentration",
        ),
        (["--spec-acceptance-concentration", "4"], "--speculative-method"),
    ],
)
def test_bad_inputs_one_line_exit_2(args: list[str], needle: str, tmp_path: object) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference_sim",
            "run",
            "--model",
            MODEL,
            "--num-requests",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0]


@pytest.mark.parametrize("latency_model", ["roofline", "blackbox"])
def test_drafting_is_priced_per_method(latency_model: str) -> None:
    """At acceptance 0 every method delivers the same tokens; what differs is drafting:
    n-gram at 0 µs < one-layer EAGLE heads < a 1.5B draft model's own forwards."""
    common = dict(
        model=MODEL, latency_model=latency_model, num_speculative_tokens=3,
        spec_acceptance_rate=0.0, num_requests=20, rate=1.0,
    )  # fmt: skip
    ngram = float(simulate(**common, speculative_method="ngram").summary["tpot_mean_ms"])
    eagle = float(simulate(**common, speculative_method="eagle").summary["tpot_mean_ms"])
    draft = simulate(
        **common, speculative_method="draft-model", speculative_model="qwen/qwen2.5-1.5b-instruct"
    )
    assert ngram < eagle < float(draft.summary["tpot_mean_ms"])


def test_calibrated_model_sees_the_whole_speculative_step() -> None:
    """The calibrated model's async-scheduling estimate needs each step's real end: the
    verification's extra tokens and the drafting are added to the step it priced."""
    from inference_sim.config.resolve import resolve

    plan = resolve(
        dict(
            model="meta-llama/llama-3.1-8b-instruct", latency_model="calibrated",
            speculative_method="eagle", num_speculative_tokens=3,
        )
    )  # fmt: skip
    lat = plan.make_latency_model()
    inst = make_instance(0, plan.engine, lat)
    inst.enqueue(make_request(0, 0, 100, 40), 0)
    t: int | None = 0
    for _ in range(5):
        assert t is not None
        t = inst.step(t)
        assert lat._last_end == inst.busy_until  # type: ignore[attr-defined]
    assert inst.stats.spec_request_steps > 0


def test_speculation_with_lora_adapters_is_a_one_line_error():
    from inference_sim import simulate
    from inference_sim.config.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be combined with LoRA"):
        simulate(
            model="meta-llama/llama-3.1-8b-instruct",
            num_requests=5,
            speculative_method="eagle",
            num_speculative_tokens=3,
            max_loras=2,
            lora_adapters="a:8",
        )


@pytest.mark.parametrize(
    ("method", "cached"), [("ngram", 48), ("eagle", 32), ("eagle3", 32), ("mtp", 32)]
)
def test_eagle_family_recomputes_the_last_block_of_a_prefix_hit(method, cached):
    """vLLM drops the last matched block for drafters that read the target's hidden states
    (eagle, eagle3, mtp: ``find_longest_cache_hit`` with ``use_eagle``): a 64-token prompt
    seen before hits 3 blocks (48 tokens, one token left to compute), those methods 2."""
    prompt = list(range(100, 164))
    reqs = [Request(0, 0, prompt, list(range(900, 910))),
            Request(1, 100_000, prompt, list(range(910, 920)))]  # fmt: skip
    spec = SpeculativeConfig(method=method, num_tokens=2, acceptance=(0.7, 0.5))
    inst = make_instance(
        0, EngineConfig(num_gpu_blocks=1000, speculative=spec),
        BlackboxLatencyModel((0, 0, 0), (1000, 10, 1)),
    )  # fmt: skip
    ClusterSimulator([inst], check_invariants=True).run(reqs)
    assert inst.stats.cached_prompt_tokens == cached


def test_draft_pass_cost_counts_the_lm_head():
    """An EAGLE draft pass reads one decoder layer, its input projection and the LM head
    (vLLM's EAGLE shares the target's): Llama-3.1-8B by hand, EAGLE-3 with its 32 000-token
    draft vocabulary, and 1/32 only without an architecture."""
    from inference_sim.catalog.architecture import bundled_architecture
    from inference_sim.config.speculative import draft_head_fraction

    arch = bundled_architecture("meta-llama/llama-3.1-8b-instruct")
    p = arch.param_breakdown()
    body = p["attention"] + p["dense_mlp"]
    d, head = 4096, 128_256 * 4096
    layer = body / 32
    assert draft_head_fraction(arch, "eagle") == pytest.approx(
        (layer + 2 * d * d + head) / (body + head)
    )
    assert draft_head_fraction(arch, "eagle3") == pytest.approx(
        (layer + 3 * d * d + 32_000 * d) / (body + head)
    )
    assert draft_head_fraction(arch, "mtp") == pytest.approx((layer + head) / (body + head))
    assert 0.09 < draft_head_fraction(arch, "eagle") < 0.11  # not 1/32
    assert draft_head_fraction(None, "eagle") == 1 / 32


@pytest.mark.parametrize(("method", "lagged"), [("ngram", False), ("eagle", True)])
def test_async_scheduling_only_with_eagle_family_speculation(method, lagged):
    """vLLM v0.15 disables async scheduling for ngram and draft-model speculation."""
    from inference_sim.catalog import load_catalog
    from inference_sim.catalog.architecture import bundled_architecture
    from inference_sim.latency.calibrated import CalibratedLatencyModel

    arch = bundled_architecture("meta-llama/llama-3.1-8b-instruct")
    latency = CalibratedLatencyModel(arch, load_catalog().gpu("H100"), 1)
    assert latency.async_scheduling
    spec = SpeculativeConfig(method=method, num_tokens=2, acceptance=(0.7, 0.5))
    inst = make_instance(0, EngineConfig(num_gpu_blocks=1000, speculative=spec), latency)
    assert inst.async_scheduling is lagged


def test_settings_vllm_would_refuse_are_simulated_with_a_warning(sim_log) -> None:
    """MTP on a checkpoint without MTP layers, or a draft model with another tokenizer:
    the what-if runs, and the log says why a real server would not."""
    draft = dict(
        speculative_method="draft-model",
        speculative_model="qwen/qwen2.5-1.5b-instruct",
        num_speculative_tokens=2,
        num_requests=3,
    )
    _run(speculative_method="mtp", num_speculative_tokens=1, num_requests=3)
    assert "no multi-token-prediction layers" in sim_log.text
    sim_log.clear()
    _run(model="meta-llama/llama-3.1-8b-instruct", **draft)
    assert "differs from meta-llama/llama-3.1-8b-instruct's" in sim_log.text
    sim_log.clear()
    _run(**draft)  # Qwen2.5-7B: one tokenizer, padded tables of other sizes
    assert "vocabulary" not in sim_log.text


def test_mtp_layers_are_read_from_config_json() -> None:
    from inference_sim.catalog.architecture import architecture_from_hf_config

    cfg = {
        "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 4, "intermediate_size": 128, "vocab_size": 100,
        "torch_dtype": "bfloat16", "num_nextn_predict_layers": 1,
    }  # fmt: skip
    assert architecture_from_hf_config(cfg, "x").mtp_layers == 1


def test_model_based_proposers_draft_k_for_every_request() -> None:
    """vLLM's ``EagleProposer.propose`` runs its first forward over the step's tokens,
    then k - 1 more over every request of the batch, drafting the full k for each: a
    prefill step of a lone request pays k passes (its drafts are used in the next step),
    and so does a decode step whose drafts were cut to 0 by the output limit."""

    def one(k: int, out: int, method: str = "eagle") -> tuple[float, float]:
        r = simulate(
            model=MODEL, latency_model="roofline", num_requests=1, rate=1.0,
            prompt_tokens=100, prompt_tokens_stdev=0, output_tokens=out,
            output_tokens_stdev=0, speculative_method=method, num_speculative_tokens=k,
            spec_acceptance_rate=0.0,
        ).records[0]  # fmt: skip
        return float(r["ttft_ms"]), float(r["e2e_ms"]) - float(r["ttft_ms"])

    ttft1, _ = one(1, 2)
    ttft3, decode3 = one(3, 2)
    plain = simulate(
        model=MODEL, latency_model="roofline", num_requests=1, rate=1.0, prompt_tokens=100,
        prompt_tokens_stdev=0, output_tokens=2, output_tokens_stdev=0,
    ).records[0]  # fmt: skip
    plain_decode = float(plain["e2e_ms"]) - float(plain["ttft_ms"])
    assert ttft3 > ttft1  # two more draft passes over the prefilling request
    # The second token's step has nothing left to draft for (output limit) but the
    # proposer still runs its k passes over the batch.
    assert decode3 > plain_decode


def test_no_drafted_step_reads_one_token_per_step() -> None:
    """With a budget of one token every draft is cut: each decode step delivers one token,
    so tokens per step is 1.0 (it read 0.0)."""
    summary, _ = _run(
        speculative_method="eagle", num_speculative_tokens=3, max_num_batched_tokens=1,
        num_requests=5,
    )  # fmt: skip
    assert summary["spec_draft_tokens"] == 0 and summary["spec_tokens_per_step"] == 1.0


@pytest.mark.parametrize("method", ["ngram", "eagle", "mtp"])
def test_lookahead_never_asks_for_a_block_past_the_last_kv_token(tmp_path, method):
    """A request writes KV for prompt + output - 1 tokens (the last token writes none):
    150 + 11 - 1 = 160 tokens fill exactly 10 blocks of 16. EAGLE's lookahead reached
    token 161 (an 11th block) and dropped the request after 5 tokens, which the plain
    engine serves."""
    from inference_sim import simulate

    trace = tmp_path / "t.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,150,11\n")
    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct",
        workload="traces",
        workload_traces_filepath=str(trace),
        total_kv_blocks=10,
        speculative_method=method,
        num_speculative_tokens=3,
        spec_acceptance_rate=0.0,
        check_invariants=True,
    )
    assert res.summary["completed_requests"] == 1
    assert res.summary["dropped_unservable"] == 0
