"""``blis run --workload-spec``: flag precedence, staged load metrics, laziness, errors."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.config.resolve import resolve
from inference_sim.core.rng import RandomStreams
from inference_sim.runner import build_requests
from inference_sim.workload import iter_spec_requests, parse_workload_spec

MODEL = "meta-llama/llama-3.1-8b-instruct"
COEFFS = ["--alpha-coeffs", "0,0,0", "--beta-coeffs", "1000,1,1"]
KW = {"alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}


def spec_doc(**top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "2",
        "seed": 11,
        "aggregate_rate": 50.0,
        "clients": [
            {
                "id": "a",
                "slo_class": "standard",
                "tenant_id": "ta",
                "rate_fraction": 1,
                "arrival": {"process": "poisson"},
                "input_distribution": {"type": "exponential", "params": {"mean": 100}},
                "output_distribution": {"type": "constant", "params": {"value": 10}},
            }
        ],
    }
    doc.update(top)
    return doc


def write(tmp_path: Path, doc: dict[str, Any], name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["run", "--model", MODEL, *COEFFS, *args])


def test_spec_values_apply_unless_flags_are_given(tmp_path):
    path = write(tmp_path, spec_doc(num_requests=30, horizon=400_000_000))
    plan = resolve({"model": MODEL, "workload_spec": path, **KW})
    o = plan.options
    assert (o["seed"], o["num_requests"], o["horizon"]) == (11, 30, 400_000_000)
    plan = resolve(
        {"model": MODEL, "workload_spec": path, "seed": 5, "num_requests": 7, "horizon": 9, **KW}
    )
    o = plan.options
    assert (o["seed"], o["num_requests"], o["horizon"]) == (5, 7, 9)
    assert plan.workload_spec.seed == 5


def test_seed_flag_replaces_the_spec_seed(tmp_path):
    path = write(tmp_path, spec_doc(num_requests=20))
    a = simulate(model=MODEL, workload_spec=path, **KW)
    b = simulate(model=MODEL, workload_spec=path, seed=11, **KW)
    c = simulate(model=MODEL, workload_spec=path, seed=12, **KW)
    assert a.records == b.records
    assert a.records != c.records
    assert a.summary["config"]["seed"] == 11
    assert [r["tenant_id"] for r in a.records] == ["ta"] * 20
    assert a.records[0]["slo_class"] == "standard"


def test_cli_run_with_stages_reports_per_stage_metrics(tmp_path):
    doc = spec_doc(stages=[{"rate": 10, "duration": 4}, {"rate": 40, "duration": 2}])
    del doc["aggregate_rate"]
    results = tmp_path / "r.json"
    result = invoke("--workload-spec", write(tmp_path, doc), "--results-path", str(results))
    assert result.exit_code == 0, result.stderr
    assert '"stages": [' in result.stdout
    data = json.loads(results.read_text())
    stages = data["stages"]
    assert [(s["start_s"], s["end_s"], s["rate"]) for s in stages] == [
        (0.0, 4.0, 10.0),
        (4.0, 6.0, 40.0),
    ]
    arrivals = [r["arrived_at"] for r in data["requests"]]
    assert stages[0]["arrived_requests"] == sum(1 for t in arrivals if t < 4.0)
    assert stages[1]["arrived_requests"] == sum(1 for t in arrivals if 4.0 <= t < 6.0)
    assert sum(s["arrived_requests"] for s in stages) == len(arrivals)
    assert stages[0]["offered_rate"] == pytest.approx(10, rel=0.35)
    assert stages[1]["offered_rate"] == pytest.approx(40, rel=0.35)
    for s in stages:
        assert s["completed_requests"] == s["arrived_requests"]
        for key in ("e2e_mean_ms", "ttft_p99_ms", "responses_per_sec", "tokens_per_sec"):
            assert s[key] > 0
    first = [r for r in data["requests"] if r["arrived_at"] < 4.0]
    mean = sum(r["ttft_ms"] for r in first) / len(first)
    assert stages[0]["ttft_mean_ms"] == pytest.approx(mean)


def test_stage_entries_carry_every_latency_key_of_the_summary(tmp_path):
    """Per-stage p50s and per-request TPOT, as the run-wide summary has them."""
    import numpy as np

    doc = spec_doc(stages=[{"rate": 5, "duration": 3}, {"rate": 60, "duration": 2}])
    del doc["aggregate_rate"]
    doc["clients"][0]["output_distribution"] = {
        "type": "gaussian",
        "params": {"mean": 20, "std_dev": 20, "min": 1, "max": 60},
    }
    res = simulate(model=MODEL, workload_spec=write(tmp_path, doc), **KW)
    latency = [
        k for k in res.summary if k.startswith(("ttft_", "e2e_", "itl_", "tpot_")) and "_p" in k
    ]
    latency += [k for k in res.summary if k.endswith("_mean_ms")]
    assert {"ttft_p50_ms", "e2e_p50_ms", "itl_p50_ms", "tpot_p99_ms"} <= set(latency)
    for st in res.summary["stages"]:
        missing = [k for k in latency if k not in st]
        assert not missing, missing
        mine = [r for r in res.records if st["start_s"] <= r["arrived_at"] < st["end_s"]]
        assert st["ttft_p50_ms"] == pytest.approx(np.percentile([r["ttft_ms"] for r in mine], 50))
        assert st["e2e_p50_ms"] == pytest.approx(np.percentile([r["e2e_ms"] for r in mine], 50))
        tpot = [
            (r["e2e_ms"] - r["ttft_ms"]) / (r["num_decode_tokens"] - 1)
            for r in mine
            if r["num_decode_tokens"] > 1
        ]
        assert len(tpot) < len(mine)  # one-token requests have no TPOT
        assert st["tpot_mean_ms"] == pytest.approx(np.mean(tpot))
        for p in (50, 90, 95, 99):
            assert st[f"tpot_p{p}_ms"] == pytest.approx(np.percentile(tpot, p))


def _per_request_itl(plan) -> dict[int, dict[int, int]]:
    """Every request's own ITL samples (value -> count, in ticks), from a run of ``plan``
    in which each request is its own ITL group."""
    from inference_sim.runner import build_simulator

    def own_group(reqs):
        for r in reqs:
            r.itl_group = r.index
            yield r

    outcome = build_simulator(plan).run(own_group(build_requests(plan, RandomStreams(11))))
    per_request: dict[int, dict[int, int]] = {}
    for inst in outcome.instances:
        for g, h in inst.stats.itl_group_histograms.items():
            dst = per_request.setdefault(g, {})
            for v, c in h.items():
                dst[v] = dst.get(v, 0) + c
    return per_request


@pytest.mark.parametrize("exact_steps", [False, True])
def test_stage_itl_percentiles_are_exact_per_stage(tmp_path, exact_steps):
    """Per-stage ITL keys equal the percentiles of the stage's requests' own ITL samples."""
    import numpy as np

    doc = spec_doc(stages=[{"rate": 4, "duration": 3}, {"rate": 120, "duration": 1.5}])
    del doc["aggregate_rate"]
    doc["clients"][0]["output_distribution"] = {"type": "constant", "params": {"value": 40}}
    opts = {"model": MODEL, "workload_spec": write(tmp_path, doc), "exact_steps": exact_steps}
    opts.update(KW)
    res = simulate(**opts)
    own = _per_request_itl(resolve(opts))
    keys = ("itl_mean_ms", "itl_p50_ms", "itl_p90_ms", "itl_p95_ms", "itl_p99_ms")

    def expected(hists):
        ticks = np.array([v for h in hists for v, c in h.items() for _ in range(c)])
        return ticks, [ticks.mean() / 1000.0] + [
            np.percentile(ticks, p) / 1000.0 for p in (50, 90, 95, 99)
        ]

    stages = res.summary["stages"]
    for st in stages:
        mine = [r for r in res.records if st["start_s"] <= r["arrived_at"] < st["end_s"]]
        assert len(mine) == st["arrived_requests"] == st["completed_requests"] > 0
        index = [int(r["requestID"].removeprefix("request_")) for r in mine]
        ticks, want = expected([own.get(i, {}) for i in index])
        assert len(ticks) == sum(r["num_decode_tokens"] - 1 for r in mine)
        assert [st[k] for k in keys] == pytest.approx(want, rel=1e-12)
    # Clearly different loads give clearly different ITL distributions.
    assert stages[1]["itl_p99_ms"] > 1.2 * stages[0]["itl_p99_ms"]
    assert stages[1]["itl_mean_ms"] > stages[0]["itl_mean_ms"]
    # The overall keys are unchanged: over every sample of every request.
    _ticks, want = expected(own.values())
    assert [res.summary[k] for k in keys] == pytest.approx(want, rel=1e-12)


def test_unbounded_spec_is_bad_input(tmp_path):
    result = invoke("--workload-spec", write(tmp_path, spec_doc()))
    assert result.exit_code == 2
    assert "requires either num_requests" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_spec_is_one_line_exit_2(tmp_path):
    doc = spec_doc(num_requests=5)
    doc["clients"][0]["input_distribution"]["type"] = "zipf"
    result = invoke("--workload-spec", write(tmp_path, doc))
    assert result.exit_code == 2
    assert 'unknown distribution type "zipf"' in result.stderr
    assert "spec.yaml" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            [
                "--workload",
                "traces",
                "--workload-traces-filepath",
                "x",
                "--trace-format",
                "parquet",
            ],
            "--trace-format",
        ),
        (["--trace-block-size", "0"], "--trace-block-size must be > 0"),
    ],
)
def test_trace_flags_are_checked(args, needle):
    result = invoke(*args)
    assert result.exit_code == 2 and needle in result.stderr


def test_build_requests_is_lazy_and_memory_stays_bounded(tmp_path):
    path = write(tmp_path, spec_doc(num_requests=10**9))
    plan = resolve({"model": MODEL, "workload_spec": path, **KW})
    reqs = build_requests(plan, RandomStreams(plan.options["seed"]))
    assert not isinstance(reqs, list)
    tracemalloc.start()
    try:
        count = 0
        for _ in reqs:
            count += 1
            if count == 30_000:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert peak < 10 * 2**20  # holding the 30k requests would take over 30 MiB


def test_streams_continue_identically_in_lazy_and_list_form():
    spec = parse_workload_spec(spec_doc())
    it = iter_spec_requests(spec, max_requests=2000)
    lazy = [(r.arrival_time, r.num_prompt_tokens) for r in it]
    again = [
        (r.arrival_time, r.num_prompt_tokens) for r in iter_spec_requests(spec, max_requests=2000)
    ]
    assert lazy == again and len(lazy) == 2000
