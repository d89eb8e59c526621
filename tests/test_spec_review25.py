"""Speculative decoding, review 25 (docs/speculative-decoding.md): ITL goodput per
delivery, the draft heads' prefill and decode costs, synchronous scheduling of ngram and
draft-model said, and prefix caching capped at the request's known tokens."""

from __future__ import annotations

import logging

import pytest

from inference_sim import simulate
from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.config.speculative import draft_fractions
from inference_sim.core.batch import StepBatch
from inference_sim.core.request import RequestState
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.speculative import SpecInstance, SpeculativeConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.latency.calibrated import CalibratedLatencyModel
from inference_sim.latency.roofline import RooflineLatencyModel
from simhelpers import make_request

LLAMA = "meta-llama/llama-3.1-8b-instruct"


def _arch():  # type: ignore[no-untyped-def]
    return bundled_architecture(LLAMA)


def _h100():  # type: ignore[no-untyped-def]
    return load_catalog().gpu("H100")


# ------------------------------------------------------------------ 1. ITL goodput


def _goodput(slo: str, **kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        model=LLAMA, latency_model="roofline", workload="chatbot", rate=20.0,
        num_requests=120, seed=42, slo=slo,
    )  # fmt: skip
    base.update(kw)
    return dict(simulate(**base).summary)


def test_itl_objective_bounds_the_gap_between_deliveries_not_tpot() -> None:
    """With EAGLE a delivery carries 1 + accepted tokens: each request's mean ITL (about a
    step, ~8 ms here) is far above its TPOT (~2.7 ms), so a 5 ms ITL bound fails nearly
    every request while the same TPOT bound passes them all."""
    spec = dict(speculative_method="eagle", num_speculative_tokens=3, spec_acceptance_rate=0.8)
    itl = _goodput("itl_p99_ms=5", **spec)
    tpot = _goodput("tpot_p99_ms=5", **spec)
    assert float(itl["tpot_mean_ms"]) < 5 < float(itl["itl_mean_ms"])
    assert float(tpot["slo_attainment"]) == 1.0
    assert float(itl["slo_attainment"]) < 0.1


def test_itl_objective_equals_tpot_without_speculation() -> None:
    """One token per delivery: the per-request ITL is the TPOT, to the bit."""
    for bound in ("4", "6.2", "8"):
        a = _goodput(f"itl_p99_ms={bound}")
        b = _goodput(f"tpot_p99_ms={bound}")
        assert (a["goodput_requests_per_sec"], a["slo_attainment"]) == (
            b["goodput_requests_per_sec"],
            b["slo_attainment"],
        )


def test_logged_gaps_are_the_requests_itl_samples() -> None:
    """``RequestLog.itl_gaps``: a request's deliveries after its first token, one ITL sample
    each, so over the finished requests they add up to the ITL histogram's samples."""
    spec = SpeculativeConfig(method="eagle", num_tokens=3, acceptance=(0.7, 0.6, 0.5), seed=2)
    inst = SpecInstance(
        0,
        EngineConfig(num_gpu_blocks=5000, max_num_batched_tokens=512, speculative=spec),
        BlackboxLatencyModel((0.0, 0.0, 0.0), (500.0, 1.0, 10.0)),
    )
    reqs = [make_request(i, 1000 * i, 30 + i, 5 + 3 * i) for i in range(20)]
    out = ClusterSimulator([inst], check_invariants=True).run(reqs)
    log = out.log
    assert all(r.state is RequestState.FINISHED for r in reqs)
    gaps = {r.index: log.itl_gaps.get(r.index, r.num_output_tokens - 1) for r in reqs}
    assert sum(gaps.values()) == sum(inst.stats.itl_histogram.values())
    assert any(gaps[r.index] < r.num_output_tokens - 1 for r in reqs)  # several at once


# ------------------------------------------------------------------ 2. draft cost


def test_draft_fractions_by_hand() -> None:
    """Llama-3.1-8B EAGLE: a one-token-per-request pass reads layer + fc + LM head, over
    body + LM head (calibrated, blackbox) or the body alone (roofline, no LM head); a
    prefill token costs the layer and fc FLOPs over the body's (logits: one row per request)."""
    arch = _arch()
    p = arch.param_breakdown()
    body = p["attention"] + p["dense_mlp"]
    d, head = 4096, 128_256 * 4096
    layer = body / 32
    with_head, body_only, prefill = draft_fractions(arch, "eagle")
    assert with_head == pytest.approx((layer + 2 * d * d + head) / (body + head))
    assert body_only == pytest.approx((layer + 2 * d * d + head) / body)
    assert prefill == pytest.approx((layer + 2 * d * d) / body)
    assert 0.035 < prefill < 0.037
    assert draft_fractions(arch, "eagle3")[2] == pytest.approx((layer + 3 * d * d) / body)
    assert draft_fractions(arch, "mtp")[2] == pytest.approx(1 / 32)
    assert draft_fractions(None, "eagle") == (1 / 32,) * 3


def _eagle(latency, k: int = 1) -> SpecInstance:  # type: ignore[no-untyped-def]
    arch = _arch()
    with_head, body_only, prefill = draft_fractions(arch, "eagle")
    spec = SpeculativeConfig(
        method="eagle", num_tokens=k, acceptance=(0.0,) * k, head_fraction=with_head,
        head_fraction_body=body_only, prefill_fraction=prefill,
    )  # fmt: skip
    inst = make_instance(0, EngineConfig(num_gpu_blocks=10_000, speculative=spec), latency)
    assert isinstance(inst, SpecInstance)
    return inst


@pytest.mark.parametrize("kind", ["roofline", "calibrated", "blackbox"])
def test_decode_draft_pass_scales_the_target_step_by_its_own_denominator(kind: str) -> None:
    """A decode-only step's draft pass: the roofline step has no LM head, so its fraction
    divides by the body alone; the calibrated and blackbox steps count the LM head."""
    arch = _arch()
    latency = {
        "roofline": lambda: RooflineLatencyModel(arch, _h100(), 1),
        "calibrated": lambda: CalibratedLatencyModel(arch, _h100(), 1),
        "blackbox": lambda: BlackboxLatencyModel((0, 0, 0), (5000.0, 20.0, 30.0)),
    }[kind]()
    inst = _eagle(latency)
    with_head, body_only, _ = draft_fractions(arch, "eagle")
    fraction = body_only if kind == "roofline" else with_head
    batch = StepBatch()
    batch.decode_tokens = 16
    batch.decode_context_sum = 16 * 1000
    step = getattr(latency, "step_time_from", None)
    target = step((), 16, 16_000) if step else latency.step_time(batch)
    drafting = inst._drafting_time(batch, [], 16, 16_000)
    assert drafting == round(fraction * target)


def test_prefill_drafting_is_priced_by_flops() -> None:
    """An 8000-token prompt with EAGLE (roofline): the draft layer's pass over the prompt
    costs its FLOPs share (~3.6 %) plus one weight-bound row for the LM head, not a tenth
    of the prefill (+10.4 % before)."""

    def ttft(**kw: object) -> float:
        return float(
            simulate(
                model=LLAMA, latency_model="roofline", rate=0.2, num_requests=5, seed=1,
                prompt_tokens=8000, prompt_tokens_stdev=0, prompt_tokens_max=100_000,
                output_tokens=2, output_tokens_stdev=0, max_num_batched_tokens=8192,
                enable_prefix_caching=False, **kw,
            ).summary["ttft_mean_ms"]
        )  # fmt: skip

    plain = ttft()
    eagle = ttft(speculative_method="eagle", num_speculative_tokens=1)
    assert 1.03 < eagle / plain < 1.05


def test_prefill_step_draft_cost_by_hand() -> None:
    """A step with one 2000-token chunk and 8 decoders (roofline): rows (the 8 decoders and
    the chunk's last token) at the weight fraction over the body, the chunk's tokens at the
    FLOPs fraction."""
    arch = _arch()
    latency = RooflineLatencyModel(arch, _h100(), 1)
    inst = _eagle(latency, k=2)
    _, body_only, prefill = draft_fractions(arch, "eagle")
    batch = StepBatch()
    batch.decode_tokens = 8
    batch.decode_context_sum = 8 * 500
    chunk = [(0, 2000)]
    f = latency.step_time_from
    rows = f((), 9, 4000) + f((), 9, 4000 + 2000)  # first pass, then k - 1 = 1 more
    tokens = f(chunk, 8, 4000) - f((), 8, 4000)
    expected = round(body_only * rows + prefill * tokens)
    assert inst._drafting_time(batch, chunk, 8, 4000) == expected


# ------------------------------------------------------------------ 3. sync scheduling


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("method", ["ngram", "draft-model"])
def test_synchronous_methods_warn_once_and_carry_a_caveat(method: str) -> None:
    """vLLM v0.15 runs ngram and draft-model without async scheduling; the CPU time that
    exposes is not priced: said once per run (two instances here) and in ``fidelity``."""
    kw = {"speculative_model": "qwen/qwen2.5-1.5b-instruct"} if method == "draft-model" else {}
    logger = logging.getLogger("inference_sim")
    said = _Said()
    logger.addHandler(said)
    try:
        res = simulate(
            model="qwen/qwen2.5-7b-instruct", latency_model="calibrated", num_requests=10,
            rate=5.0, num_instances=2, speculative_method=method, num_speculative_tokens=2,
            **kw,
        )  # fmt: skip
    finally:
        logger.removeHandler(said)
    assert sum("without async scheduling" in m for m in said.messages) == 1
    caveats = res.summary["fidelity"]["caveats"]
    assert any("without async scheduling" in c for c in caveats)


def test_eagle_keeps_async_scheduling_without_the_warning(sim_log) -> None:
    simulate(
        model=LLAMA, latency_model="calibrated", num_requests=5, rate=5.0,
        speculative_method="eagle", num_speculative_tokens=2,
    )  # fmt: skip
    assert "without async scheduling" not in sim_log.text


# ------------------------------------------------------------------ 4. caching cap


@pytest.mark.parametrize("method", ["eagle", "ngram"])
def test_draft_and_lookahead_slots_are_never_cached(method: str) -> None:
    """vLLM caches up to request.num_tokens (prompt + outputs): the blocks holding a
    decoder's unverified draft tokens and lookahead slots stay out of the prefix cache.
    With acceptance 0 a step grows a request by one token while it asks for 1 + 2k slots."""
    spec = SpeculativeConfig(method=method, num_tokens=3, acceptance=(0.0,) * 3)
    inst = SpecInstance(
        0,
        EngineConfig(num_gpu_blocks=1000, block_size=4, speculative=spec),
        BlackboxLatencyModel((0, 0, 0), (1000.0, 1.0, 1.0)),
    )
    req = make_request(0, 0, 10, 30)
    inst.enqueue(req, 0)
    kv = inst.kv
    end: int | None = 0
    checked = 0
    while end is not None and req.state is not RequestState.FINISHED:
        batch = inst.schedule(end)
        if req.index in kv.num_hashed:
            known = req.num_prompt_tokens + req.delivered
            assert kv.num_hashed[req.index] * kv.block_size <= known
            checked += 1
        step_end = inst.execute(batch, end) if batch.requests else end
        inst.apply(batch, step_end)
        end = inst._next_step(step_end)
    assert checked > 20 and req.delivered == 30


def test_plain_engine_caches_as_before() -> None:
    """The cap is the speculative engine's: a plain instance's allocations are unchanged."""
    inst = make_instance(
        0, EngineConfig(num_gpu_blocks=100), BlackboxLatencyModel((0, 0, 0), (1000, 1, 1))
    )
    assert not isinstance(inst, SpecInstance) and not inst.kv.cache_known_tokens_only
