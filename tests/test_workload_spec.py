"""Workload-spec YAML: schema, validation, generation statistics, determinism, streams."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from inference_sim.core.rng import RandomStreams
from inference_sim.workload import (
    WorkloadError,
    generate_spec_requests,
    iter_spec_requests,
    load_workload_spec,
    parse_workload_spec,
)
from inference_sim.workload.generate import arrival_times
from inference_sim.workload.samplers import UnitGaps, make_length_sampler, weibull_shape

SHARED = Path(
    os.environ.get("INFERENCE_SIM_SHARED", Path(__file__).resolve().parents[2] / "shared")
)
EXAMPLES = SHARED / "reference-data" / "examples"
WORKLOAD_EXAMPLES = [
    "servegen-language.yaml",
    "prefix-affinity-demo.yaml",
    "multiturn-chat-demo.yaml",
    "inference-perf-shared-prefix.yaml",
]
needs_shared = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared reference data absent")


def client(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "id": "c",
        "rate_fraction": 1.0,
        "arrival": {"process": "poisson"},
        "input_distribution": {"type": "constant", "params": {"value": 20}},
        "output_distribution": {"type": "constant", "params": {"value": 5}},
    }
    c.update(over)
    return c


def spec_of(*clients: dict[str, Any], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": "2", "seed": 3, "aggregate_rate": 100.0}
    doc["clients"] = list(clients) or [client()]
    doc.update(top)
    return doc


def gen(doc: dict[str, Any], n: int = 0, **kw: Any):
    return generate_spec_requests(parse_workload_spec(doc), max_requests=n, **kw)


def by_client(reqs):
    out: dict[str, list] = {}
    for r in reqs:
        out.setdefault(r.metadata.get("client_id", ""), []).append(r)
    return out


def fingerprint(reqs):
    return [
        (r.arrival_time, r.input_tokens.tobytes(), r.output_tokens.tobytes(), r.slo_class)
        for r in reqs
    ]


# --- the shipped examples -----------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("name", WORKLOAD_EXAMPLES)
def test_every_example_loads_and_generates(name):
    spec = load_workload_spec(EXAMPLES / name)
    cap = spec.num_requests or 300
    reqs = generate_spec_requests(spec, max_requests=cap)
    assert len(reqs) == cap
    assert [r.index for r in reqs] == list(range(cap))
    arrivals = [r.arrival_time for r in reqs]
    assert arrivals == sorted(arrivals)
    assert all(r.num_prompt_tokens >= 1 for r in reqs)


@needs_shared
def test_policy_bundles_are_named_as_such():
    with pytest.raises(WorkloadError, match="policy bundle"):
        load_workload_spec(EXAMPLES / "policy-config.yaml")


@needs_shared
@pytest.mark.parametrize(
    ("name", "key"),
    [("servegen-language.yaml", "tenant_id"), ("prefix-affinity-demo.yaml", "tenant_id")],
)
def test_rate_fractions_within_3_percent_over_10k(name, key):
    spec = load_workload_spec(EXAMPLES / name)
    reqs = list(iter_spec_requests(spec, max_requests=10_000))
    fractions = {c.tenant_id: c.rate_fraction for c in spec.clients}
    total = sum(fractions.values())
    counts: dict[str, int] = {}
    for r in reqs:
        counts[getattr(r, key)] = counts.get(getattr(r, key), 0) + 1
    for tenant, f in fractions.items():
        got = counts[tenant] / len(reqs)
        assert got == pytest.approx(f / total, rel=0.03), (tenant, got)


@needs_shared
def test_servegen_example_lengths_and_prefix():
    spec = load_workload_spec(EXAMPLES / "servegen-language.yaml")
    reqs = list(iter_spec_requests(spec, max_requests=20_000))
    groups = by_client(reqs)
    chat = groups["realtime-chat"]
    # gaussian(128, 50) clamped to [10, 2048]: mean about 128, every value inside the clamp
    lengths = np.array([r.num_prompt_tokens for r in chat])
    assert lengths.min() >= 10 and lengths.max() <= 2048
    assert lengths.mean() == pytest.approx(128, rel=0.03)
    outs = np.array([r.num_output_tokens for r in chat])
    assert outs.mean() == pytest.approx(64, rel=0.05)  # exponential(64), min-1 floor
    batch = groups["high-volume-batch"]
    prefix = batch[0].input_tokens[:50]
    assert all(np.array_equal(r.input_tokens[:50], prefix) for r in batch)  # default 50
    assert not np.array_equal(chat[0].input_tokens[:50], prefix)


@needs_shared
def test_inference_perf_example_runs_the_stages_at_their_own_rates():
    spec = load_workload_spec(EXAMPLES / "inference-perf-shared-prefix.yaml")
    assert len(spec.clients) == 45 and spec.category == "language"
    assert [(s.rate, s.start_us, s.end_us) for s in spec.stages] == [
        (8.0, 0, 600_000_000),
        (20.0, 600_000_000, 1_200_000_000),
    ]
    t = np.array([r.arrival_time for r in iter_spec_requests(spec)])
    first = np.count_nonzero(t < 600_000_000)
    second = np.count_nonzero(t >= 600_000_000)
    assert t.max() < 1_200_000_000
    assert first / 600 == pytest.approx(8.0, rel=0.05)
    assert second / 600 == pytest.approx(20.0, rel=0.05)


# --- samplers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("process", "cv"), [("gamma", 3.5), ("gamma", 0.5), ("weibull", 2.0), ("weibull", 0.5)]
)
def test_interarrival_cv_within_5_percent(process, cv):
    rng = np.random.default_rng(11)
    rate = 100 / 1e6
    blocks = arrival_times(UnitGaps(process, cv), rng, rate_per_us=rate, limit=2_000_000_000)
    t = np.concatenate(list(blocks))
    gaps = np.diff(np.concatenate(([0], t)))
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.02)


def test_weibull_cv_in_a_generated_workload():
    doc = spec_of(client(arrival={"process": "weibull", "cv": 2.0}))
    t = np.array([r.arrival_time for r in gen(doc, 30_000)])
    gaps = np.diff(np.concatenate(([0], t)))
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.05)


def test_weibull_shape_matches_reference_values():
    for cv, k in [(0.5, 2.0999511718750004), (1, 0.9993682861328124), (2, 0.5428245544433594)]:
        assert weibull_shape(cv) == pytest.approx(k, abs=2e-3)


def test_constant_arrivals_are_evenly_spaced():
    doc = spec_of(client(arrival={"process": "constant"}), aggregate_rate=10.0)
    assert [r.arrival_time for r in gen(doc, 4)] == [99999, 199998, 299997, 399996]


@pytest.mark.parametrize(
    ("dist", "mean", "lo", "hi"),
    [
        (
            {"type": "gaussian", "params": {"mean": 100, "std_dev": 80, "min": 60, "max": 200}},
            None,
            60,
            200,
        ),
        ({"type": "exponential", "params": {"mean": 256}}, 256, 1, None),
        ({"type": "exponential", "params": {"mean": 256, "min": 100, "max": 300}}, None, 100, 300),
        ({"type": "constant", "params": {"value": 0}}, 1, 1, 1),
        ({"type": "empirical", "params": {"100": 0.5, "200": 0.3, 300: 0.2}}, 170, 100, 300),
        (
            {
                "type": "pareto_lognormal",
                "params": {
                    "alpha": 1.5,
                    "xm": 50,
                    "mu": 5.5,
                    "sigma": 1.2,
                    "mix_weight": 0.3,
                    "max": 4000,
                },
            },
            None,
            1,
            4000,
        ),
    ],
)
def test_length_means_and_clamps(dist, mean, lo, hi):
    s = make_length_sampler(dist["type"], dist["params"], "x")
    v = s.sample(np.random.default_rng(5), 100_000)
    assert v.dtype == np.int64
    assert v.min() >= lo
    if hi is not None:
        assert v.max() <= hi
    if mean is not None:
        assert v.mean() == pytest.approx(mean, rel=0.02)


def test_gaussian_clamp_and_half_away_rounding():
    s = make_length_sampler("gaussian", {"mean": 0.5, "std_dev": 0, "min": 0, "max": 9}, "x")
    assert s.sample(np.random.default_rng(0), 3).tolist() == [1, 1, 1]
    s = make_length_sampler("gaussian", {"mean": 4, "std_dev": 3, "min": 4, "max": 4}, "x")
    assert s.sample(np.random.default_rng(0), 2).tolist() == [4, 4]  # min == max: no draw


def test_sampler_chunking_does_not_change_draws():
    s = make_length_sampler("gaussian", {"mean": 100, "std_dev": 30, "min": 1, "max": 500}, "x")
    one = s.sample(np.random.default_rng(9), 10)
    rng = np.random.default_rng(9)
    parts = np.concatenate([s.sample(rng, 3), s.sample(rng, 7)])
    assert one.tolist() == parts.tolist()


# --- determinism and stream independence --------------------------------------------------


def test_same_seed_same_workload_and_other_seed_differs():
    doc = spec_of(client(input_distribution={"type": "exponential", "params": {"mean": 50}}))
    a, b = gen(doc, 200), gen(doc, 200)
    assert fingerprint(a) == fingerprint(b)
    doc["seed"] = 4
    assert fingerprint(gen(doc, 200)) != fingerprint(a)


def test_adding_a_client_keeps_the_other_clients_draws():
    a = client(id="a", input_distribution={"type": "exponential", "params": {"mean": 80}})
    b = client(id="b", arrival={"process": "gamma", "cv": 2.0}, prefix_group="g")
    z = client(id="z", rate_fraction=2.0, prefix_group="h")
    # Same per-client rate (100 * 1/2 == 200 * 1/4), so only the new client is new.
    before = by_client(gen(spec_of(a, b, aggregate_rate=100.0), horizon=5_000_000))
    after = by_client(gen(spec_of(z, a, b, aggregate_rate=200.0), horizon=5_000_000))
    for name in ("a", "b"):
        assert fingerprint(after[name]) == fingerprint(before[name]), name
    assert len(after["z"]) > 0


def test_num_requests_and_horizon_cut_without_changing_earlier_requests():
    doc = spec_of(client(id="a"), client(id="b", rate_fraction=3.0))
    full = gen(doc, 500)
    assert fingerprint(gen(doc, 100)) == fingerprint(full[:100])
    h = full[250].arrival_time
    cut = gen(doc, horizon=h)
    assert fingerprint(cut) == fingerprint([r for r in full if r.arrival_time < h])


def test_merge_orders_ties_by_client_order():
    doc = spec_of(
        client(id="x", arrival={"process": "constant"}),
        client(id="y", arrival={"process": "constant"}),
        aggregate_rate=2.0,
    )
    reqs = gen(doc, 6)
    assert [r.metadata["client_id"] for r in reqs] == ["x", "y"] * 3
    assert [r.arrival_time for r in reqs] == [1_000_000] * 2 + [2_000_000] * 2 + [3_000_000] * 2


def test_explicit_streams_override_the_spec_seed():
    doc = spec_of(client(input_distribution={"type": "exponential", "params": {"mean": 50}}))
    spec = parse_workload_spec(doc)
    a = generate_spec_requests(spec, max_requests=50, streams=RandomStreams(99))
    b = generate_spec_requests(spec.with_seed(99), max_requests=50)
    assert fingerprint(a) == fingerprint(b)


# --- features -----------------------------------------------------------------------------


def test_prefix_group_length_comes_from_the_first_client_naming_it():
    doc = spec_of(
        client(id="a", prefix_group="g", prefix_length=32),
        client(id="b", prefix_group="g", prefix_length=99),
    )
    groups = by_client(gen(doc, 200))
    a, b = groups["a"], groups["b"]
    assert a[0].num_prompt_tokens == 52 and b[0].num_prompt_tokens == 52
    assert np.array_equal(a[0].input_tokens[:32], b[0].input_tokens[:32])
    assert not np.array_equal(a[0].input_tokens[32:], b[0].input_tokens[32:])
    assert a[0].metadata["prefix_length"] == 32


def test_lifecycle_windows_filter_and_bound_generation():
    windows = {
        "windows": [
            {"start_us": 0, "end_us": 1_000_000},
            {"start_us": 3_000_000, "end_us": 4_000_000},
        ]
    }
    doc = spec_of(client(lifecycle=windows))
    spec = parse_workload_spec(doc)
    assert spec.self_bounded
    t = np.array([r.arrival_time for r in generate_spec_requests(spec)])
    assert ((t < 1_000_000) | ((t >= 3_000_000) & (t < 4_000_000))).all()
    assert 150 < len(t) < 250
    empty = spec_of(client(lifecycle={"windows": []}))
    assert gen(empty, 10) == []


def test_multi_turn_sessions_accumulate_context():
    mt = {"max_rounds": 3, "think_time_us": 1000, "context_growth": "accumulate"}
    doc = spec_of(
        client(
            reasoning={
                "reason_ratio_distribution": {"type": "constant", "params": {"value": 30}},
                "multi_turn": mt,
            },
            prefix_group="sys",
            prefix_length=16,
        ),
        aggregate_rate=2.0,
    )
    reqs = gen(doc, horizon=20_000_000)
    sessions: dict[str, list] = {}
    for r in reqs:
        sessions.setdefault(r.metadata["session_id"], []).append(r)
    assert len(sessions) > 10
    for rounds in sessions.values():
        if len(rounds) < 3:
            continue
        assert [r.metadata["round_index"] for r in rounds] == [0, 1, 2]
        r0, r1, r2 = rounds
        assert r0.num_prompt_tokens == 36  # 16-token system prompt + 20
        ctx = np.concatenate((r0.input_tokens, r0.output_tokens))
        assert np.array_equal(r1.input_tokens[: len(ctx)], ctx)
        assert r1.num_prompt_tokens == len(ctx) + 20
        assert r1.metadata["context_tokens"] == len(ctx)
        assert r1.arrival_time == r0.arrival_time + 1000 + 5
        assert r2.arrival_time == r1.arrival_time + 1000 + 5
        assert r0.metadata["reason_ratio"] == pytest.approx(0.3)
    t = [r.arrival_time for r in reqs]
    assert t == sorted(t)


def test_multimodal_counts_sum_to_the_prompt():
    mm = {
        "text_distribution": {"type": "constant", "params": {"value": 10}},
        "image_distribution": {"type": "constant", "params": {"value": 100}},
        "image_count_distribution": {"type": "empirical", "params": {0: 1, 1: 1, 2: 1}},
    }
    reqs = gen(spec_of(client(multimodal=mm)), 300)
    counts = set()
    for r in reqs:
        m = r.metadata
        assert r.num_prompt_tokens == m["text_tokens"] + m["image_tokens"]
        counts.add(m["image_tokens"])
    assert counts == {0, 100, 200}


def test_slo_tenant_model_and_v1_upgrade():
    doc = spec_of(
        client(id="a", slo_class="realtime", tenant_id="t1", model="m1"),
        client(id="b", slo_class="interactive"),
        version="1",
    )
    spec = parse_workload_spec(doc)
    assert spec.version == "2"
    assert [c.slo_class for c in spec.clients] == ["critical", "standard"]
    assert len(spec.warnings) == 2 and "deprecated" in spec.warnings[0]
    r = by_client(generate_spec_requests(spec, max_requests=50))["a"][0]
    assert (r.slo_class, r.tenant_id, r.model) == ("critical", "t1", "m1")


def test_staged_spec_and_cycle_prompts():
    doc = {
        "seed": 1,
        "inference_perf": {
            "stages": [{"rate": 50, "duration": 2}, {"rate": 200, "end": 3}],
            "shared_prefix": {
                "num_groups": 2,
                "num_prompts_per_group": 3,
                "system_prompt_len": 32,
                "question_len": 16,
                "output_len": 4,
            },
            "cycle_prompts": True,
        },
    }
    spec = parse_workload_spec(doc)
    reqs = generate_spec_requests(spec)
    t = np.array([r.arrival_time for r in reqs])
    assert np.count_nonzero(t < 2_000_000) == pytest.approx(100, abs=35)
    assert np.count_nonzero(t >= 2_000_000) == pytest.approx(200, abs=45)
    order = [r.metadata["client_id"] for r in reqs[:12]]
    assert order[:6] == order[6:12] and len(set(order[:6])) == 6  # a fixed cycle of 6 prompts
    assert np.array_equal(reqs[0].input_tokens, reqs[6].input_tokens)  # identical prompts
    assert reqs[6].metadata["context_tokens"] == 48


def test_servegen_directory(tmp_path):
    (tmp_path / "chunk-1-trace.csv").write_text("0,5,2.0,Gamma\n10,8,1.5,Weibull\nbad\n")
    (tmp_path / "chunk-1-dataset.json").write_text(
        '{"0": {"input_tokens": "{100: 0.5, 200: 0.5}", "output_tokens": "{10: 1.0,}"}}'
    )
    (tmp_path / "chunk-2-trace.csv").write_text("0,2,0,Poisson\n")
    (tmp_path / "chunk-2-dataset.json").write_text(
        '{"x": {"input_tokens": "{1: 1}", "output_tokens": "{1: 1}"}, '
        '"5": {"input_tokens": "{300: 1}", "output_tokens": "{7: 1}"}}'
    )
    spec = parse_workload_spec(
        {"aggregate_rate": 10, "num_requests": 200, "servegen_data": {"path": str(tmp_path)}}
    )
    c1, c2 = spec.clients
    assert (c1.id, c1.tenant_id, c1.rate_fraction) == ("servegen-chunk-1", "chunk-1", 8.0)
    assert (c1.arrival.process, c1.arrival.cv) == ("weibull", 1.5)
    assert (c2.arrival.process, c2.rate_fraction) == ("poisson", 2.0)
    assert any("malformed" in w for w in spec.warnings)
    reqs = generate_spec_requests(spec, max_requests=200)
    assert {r.num_prompt_tokens for r in reqs if r.tenant_id == "chunk-1"} == {100, 200}
    assert {r.num_prompt_tokens for r in reqs if r.tenant_id == "chunk-2"} == {300}


# --- bad input: one clear line naming the field -------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            lambda d: d["clients"][0]["input_distribution"].update(type="zipf"),
            'clients[0].input_distribution.type: unknown distribution type "zipf"',
        ),
        (
            lambda d: d["clients"][0].update(rate_fraction=-1),
            "clients[0].rate_fraction must be positive, got -1.0",
        ),
        (lambda d: d.update(aggregate_rate=-5), "aggregate_rate must be positive, got -5.0"),
        (
            lambda d: d["clients"][0].update(arrival={"process": "bursty"}),
            'clients[0].arrival.process: unknown arrival process "bursty"',
        ),
        (
            lambda d: d["clients"][0].update(arrival={"process": "weibull", "cv": 20}),
            "weibull CV must be in [0.01, 10.4]",
        ),
        (
            lambda d: d["clients"][0].update(arrival={"process": "gamma", "cv": 0}),
            "clients[0].arrival.cv must be positive",
        ),
        (
            lambda d: d["clients"][0].update(slo_class="gold"),
            'clients[0].slo_class: unknown SLO class "gold"',
        ),
        (
            lambda d: d["clients"][0].update(prefix_length=-2),
            "clients[0].prefix_length must be non-negative",
        ),
        (lambda d: d["clients"][0].update(arival={}), 'clients[0]: unknown field "arival"'),
        (lambda d: d.update(category="video"), 'category: unknown category "video"'),
        (lambda d: d.update(clients=[]), "at least one client"),
        (
            lambda d: d["clients"][0]["output_distribution"].update(
                type="gaussian", params={"mean": 5}
            ),
            'requires parameter "std_dev"',
        ),
        (
            lambda d: d["clients"][0]["output_distribution"].update(params={"value": float("nan")}),
            "output_distribution.params.value must be a finite number",
        ),
        (
            lambda d: d["clients"][0]["output_distribution"].update(
                type="empirical", params={"ten": 1}
            ),
            "key 'ten' is not an integer",
        ),
        (
            lambda d: d["clients"][0].update(reasoning={"multi_turn": {"max_rounds": 0}}),
            "max_rounds must be in [1, 100000]",
        ),
        (
            lambda d: d.update(stages=[{"rate": 5, "duration": 10}, {"rate": 6, "end": 5}]),
            "stages[1].end must be greater than the previous stage's end",
        ),
        (
            lambda d: d.update(stages=[{"rate": 5, "duration": 0}]),
            "stages[0].duration must be positive",
        ),
        (
            lambda d: d.update(stages=[{"rate": -1, "duration": 3}]),
            "stages[0].rate must be a finite positive number",
        ),
        (
            lambda d: d.update(inference_perf={"stages": [{"rate": 1, "duration": 1}]}),
            "inference_perf: shared_prefix is required",
        ),
    ],
)
def test_bad_specs_fail_with_one_line_naming_the_field(mutate, needle):
    doc = spec_of(client())
    mutate(doc)
    with pytest.raises(WorkloadError) as info:
        parse_workload_spec(doc)
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("clients: [\n")
    with pytest.raises(WorkloadError, match=r"s\.yaml: invalid YAML"):
        load_workload_spec(path)
    path.write_text(yaml.safe_dump(spec_of(client(rate_fraction=0))))
    with pytest.raises(
        WorkloadError, match=r"workload spec .*s\.yaml: clients\[0\]\.rate_fraction"
    ):
        load_workload_spec(path)
    with pytest.raises(WorkloadError, match="file not found"):
        load_workload_spec(tmp_path / "missing.yaml")


def test_unbounded_spec_is_refused_for_a_list():
    with pytest.raises(WorkloadError, match="unbounded"):
        generate_spec_requests(parse_workload_spec(spec_of(client())))
