"""`blis plan` searching per-pool TP of disaggregated candidates (docs/planning.md)."""

from __future__ import annotations

import dataclasses
import json

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.cli.main import cli
from inference_sim.planning import Deployment, format_plan, parse_slos, plan_capacity

MODEL = "meta-llama/llama-3.1-8b-instruct"


def test_gpu_count_of_a_split_by_hand():
    d = Deployment(MODEL, "H100", 1, pd_ratio=(1, 3), prefill_tp=2, decode_tp=4)
    # 8 instances at 1:3: round(8 / 4) = 2 prefill x TP2 + 6 decode x TP4 = 4 + 24
    assert d.gpus(8, 1) == 28
    # 2 instances: 1 + 1 (each pool at least one) = 2 + 4
    assert d.gpus(2, 1) == 6
    # a pool without its own TP runs at the deployment's (or the resolved run's) TP
    assert dataclasses.replace(d, decode_tp=0).gpus(8, 1) == 2 * 2 + 6 * 1
    assert dataclasses.replace(d, decode_tp=0).gpus(8, 1, decode_tp=2) == 2 * 2 + 6 * 2
    assert Deployment(MODEL, "H100", 2).gpus(5, 2) == 10  # colocated: n x TP
    for n in range(2, 40):  # one more instance never means fewer GPUs (pruning relies on it)
        assert d.gpus(n + 1, 1) >= d.gpus(n, 1)


class FakeBackend:
    """Answers every run from a capacity model instead of simulating: a split meets the
    SLO when its prefill pool has >= ``p_need`` GPUs and its decode pool >= ``d_need``;
    colocated runs need ``c_need`` GPUs. Both grow with the instance count, as the
    search assumes."""

    def __init__(self, jobs: int, p_need: int, d_need: int, c_need: int) -> None:
        self.jobs = jobs
        self.need = (p_need, d_need, c_need)
        self.runs: list[dict] = []

    def map(self, func, items, on_result):  # the real worker (func) is not run
        for i, opts in enumerate(items):
            self.runs.append(opts)
            tp = opts.get("tp", 1)
            p, d = opts.get("prefill_instances", 0), opts.get("decode_instances", 0)
            ptp, dtp = opts.get("prefill_tp", 0) or tp, opts.get("decode_tp", 0) or tp
            if p or d:
                ok = p * ptp >= self.need[0] and d * dtp >= self.need[1]
            else:
                ok = opts["num_instances"] * tp >= self.need[2]
            summary = {
                "ttft_p99_ms": 100.0 if ok else 1000.0,
                "completed_requests": 10,
                "injected_requests": 10,
                "rejected_requests": 0,
                "config": {"tp": tp, "hardware": "H100", "prefill_tp": opts.get("prefill_tp", 0),
                           "decode_tp": opts.get("decode_tp", 0)},
            }  # fmt: skip
            on_result(i, {"status": "ok", "summary": summary})

    def close(self) -> None:
        pass


def _deployments(ratios, ptps, dtps):
    base = Deployment(MODEL, "H100", 1)
    out = [base]
    for r in ratios:
        for p in ptps:
            for d in dtps:
                out.append(dataclasses.replace(base, pd_ratio=r, prefill_tp=p, decode_tp=d))
    return out


def _brute_min_gpus(dep, max_n, p_need, d_need):
    """The cheapest split of one candidate, by trying every count (None: none meets)."""
    best = None
    for n in range(2, max_n + 1):
        s = dep.pd_split(n)
        if s["prefill_instances"] * dep.prefill_tp >= p_need and (
            s["decode_instances"] * dep.decode_tp >= d_need
        ):
            g = dep.gpus(n, 1)
            best = g if best is None else min(best, g)
    return best


def test_cheapest_split_with_pool_tps_by_hand():
    # Prefill needs 2 GPUs, decode 4; at 1:1 with up to 8 instances the cheapest is
    # 2 + 2 instances at prefill TP1 / decode TP2 = 2 + 4 = 6 GPUs (TP1/TP1 needs 4 + 4 =
    # 8; TP2/TP2 needs 1 + 2 -> 3 + 3 at 1:1 = 12; TP2/TP1 needs 4 + 4 -> 8 + 4 = 12).
    backend = FakeBackend(1, 2, 4, 7)
    deps = _deployments([(1, 1)], [1, 2], [1, 2])
    out = plan_capacity({}, deps, parse_slos(["ttft_p99_ms=500"]), rate=1.0, max_instances=8,
                        backend=backend, saturation=False, gpu_hour_price=3.0)  # fmt: skip
    dis = out.cheapest(disaggregated=True)
    assert dis is not None and dis.gpus == 6 and dis.instances == 4
    assert (dis.deployment.prefill_tp, dis.deployment.decode_tp) == (1, 2)
    assert dis.cost_per_hour == 18.0
    doc = out.to_dict()
    assert doc["cheapest_disaggregated"]["prefill_tp"] == 1
    assert doc["cheapest_disaggregated"]["decode_tp"] == 2
    assert doc["cheapest_colocated"]["gpus"] == 7
    assert doc["simulations"] == out.simulations == len(backend.runs)
    # split probes run with the pool TPs; none of them runs below 2 instances
    for opts in backend.runs:
        if "prefill_instances" in opts:
            assert opts["num_instances"] >= 2 and opts["prefill_instances"] >= 1
    # a pool-TP pair that needs more GPUs than the answer at every untested count stops
    pruned = [c for c in out.candidates if c.pruned]
    assert pruned, "the TP2/TP2 and TP2/TP1 candidates cannot beat 6 GPUs"
    for c in pruned:
        assert _brute_min_gpus(c.deployment, 8, 2, 4) > 6
    text = format_plan(out)
    assert "P/D TP" in text and "1/2" in text
    assert f"{out.simulations} simulations" in text


@settings(max_examples=40, deadline=None)
@given(
    p_need=st.integers(1, 8),
    d_need=st.integers(1, 12),
    ratios=st.lists(st.sampled_from([(1, 1), (1, 2), (1, 3), (2, 1)]), min_size=1, max_size=2,
                    unique=True),
    ptps=st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=3, unique=True),
    dtps=st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=3, unique=True),
    max_n=st.integers(2, 12),
    jobs=st.sampled_from([1, 3, 8]),
)  # fmt: skip
def test_properties_search_finds_the_cheapest_split(
    p_need, d_need, ratios, ptps, dtps, max_n, jobs
):
    backend = FakeBackend(jobs, p_need, d_need, 5)
    deps = _deployments(ratios, ptps, dtps)
    out = plan_capacity({}, deps, parse_slos(["ttft_p99_ms=500"]), rate=1.0,
                        max_instances=max_n, backend=backend, saturation=False)  # fmt: skip
    truth = {d: _brute_min_gpus(d, max_n, p_need, d_need) for d in deps[1:]}
    feasible = [g for g in truth.values() if g is not None]
    dis = out.cheapest(disaggregated=True)
    if not feasible:
        assert dis is None
        return
    assert dis is not None and dis.gpus == min(feasible)
    assert dis.gpus == dis.deployment.gpus(dis.instances, 1)
    for c in out.candidates:
        if not c.deployment.pd_ratio:
            continue
        g = truth[c.deployment]
        if c.pruned and c.instances is None:
            assert g is None or g > min(feasible)  # pruned only when it cannot win
        elif c.instances is not None:
            # searched to the end: the fewest instances, hence (monotone) fewest GPUs
            assert c.gpus == g
        else:
            assert g is None
    assert out.simulations == len(backend.runs)


def _plan(*args):
    return CliRunner().invoke(cli, ["plan", "--model", MODEL, *args])


def test_plan_cli_searches_pool_tps_on_real_runs():
    res = _plan(
        "--hardware", "H100", "--tp", "1", "--workload", "summarization", "--rate", "8",
        "--num-requests", "120", "--slo", "itl_p99_ms=12", "--max-instances", "3",
        "--no-saturation", "--pd-ratio", "1:1", "--decode-tp", "1,2", "--gpu-hour-price", "3",
        "--json", "-q", "--jobs", "1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    pd = [c for c in doc["candidates"] if c.get("pd_ratio")]
    assert sorted(c["decode_tp"] for c in pd) == [1, 2]
    for c in pd:
        assert c["prefill_tp"] == 1
        if c["instances"] is not None:
            cfg = c["summary"]["config"]
            assert cfg["prefill_instances"] + cfg["decode_instances"] == c["instances"]
            assert (cfg["decode_tp"] or cfg["tp"]) == c["decode_tp"]
            gpus = c["prefill_instances"] * c["prefill_tp"] + c["decode_instances"] * c["decode_tp"]
            assert c["gpus"] == gpus and c["cost_per_hour"] == 3 * gpus
    dis = doc["cheapest_disaggregated"]
    assert dis is not None and dis["gpus"] == min(c["gpus"] for c in pd if c["gpus"])
    assert doc["simulations"] >= len(pd)


def test_plan_pool_tp_bad_inputs_one_line_exit_2():
    for args, needle in [
        (("--rate", "1", "--pd-ratio", "1:1", "--prefill-tp", "0"), "--prefill-tp '0'"),
        (("--rate", "1", "--pd-ratio", "1:1", "--decode-tp", "two"), "--decode-tp 'two'"),
        (("--rate", "1", "--decode-tp", "2"), "--decode-tp sets a pool's TP"),
    ]:
        res = _plan(*args)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], res.output


def test_candidates_are_ratios_times_pool_tps_without_duplicates():
    from inference_sim.planning.cli import _with_pd_ratios

    deps = [Deployment(MODEL, "H100", 1), Deployment(MODEL, "H100", 2)]
    out = _with_pd_ratios(deps, ["1:2", "1:1"], [1, 2], [2, 4])
    pd = [d for d in out if d.pd_ratio]
    # 2 ratios x 2 prefill TPs x 2 decode TPs; --tp plays no part once both are given
    assert len(pd) == 8 and len(set(pd)) == 8
    assert {(d.pd_ratio, d.prefill_tp, d.decode_tp) for d in pd} == {
        (r, p, q) for r in [(1, 2), (1, 1)] for p in [1, 2] for q in [2, 4]
    }
    assert [d for d in out if not d.pd_ratio] == deps  # colocated candidates stay
    # with one pool TP left to the deployment, each --tp gives its own candidates
    assert len([d for d in _with_pd_ratios(deps, ["1:1"], [], [2]) if d.pd_ratio]) == 2
