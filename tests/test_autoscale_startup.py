"""Replica start-up as a distribution (--replica-startup-cv, docs/autoscaling.md)."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.cluster.autoscale import AutoscaleClusterSimulator, AutoscaleConfig
from inference_sim.core.request import RequestState
from inference_sim.core.rng import RandomStreams
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.policies.routing import LeastLoaded
from simhelpers import make_request


def _sim(n_max=2, *, initial=1, target=1.0, interval=1000, startup=5000, cv=0.5, seed=7,
         metric="in-flight"):  # fmt: skip
    insts = [
        make_instance(
            i,
            EngineConfig(num_gpu_blocks=2000, block_size=16),
            BlackboxLatencyModel((0, 0, 0), (1000.0, 10.0, 1.0)),
        )
        for i in range(n_max)
    ]
    cfg = AutoscaleConfig(
        1, n_max, metric, target, interval, startup, 0, 0, 1, 2.0, startup_cv=cv, seed=seed
    )
    return AutoscaleClusterSimulator(
        insts, autoscale=cfg, initial=initial, routing=LeastLoaded(), check_invariants=True
    )


def _expected_draw(seed: int, k: int, mean_us: int, cv: float, pool: str = "cluster") -> int:
    """Draw ``k`` by hand: lognormal with mean ``mean_us`` and this cv, from the stream
    ``replica-startup:<pool>`` keyed by the load's rank."""
    sigma2 = math.log(1 + cv * cv)
    mu = math.log(mean_us) - sigma2 / 2
    z = RandomStreams(seed).keyed(f"replica-startup:{pool}", k).lognormal(mu, math.sqrt(sigma2))
    return round(float(z))


def test_replica_routable_exactly_after_its_own_drawn_load_delay():
    # As the constant-delay vector (tests/test_autoscale.py): four long requests on one
    # replica, the 1000 µs decision starts one load. Its duration is draw 0 of the
    # seed-7 stream (mean 5000 µs, cv 0.5), not 5000: a request one µs before the end goes
    # to instance 0, one µs after to the new, empty instance 1.
    d = _expected_draw(7, 0, 5000, 0.5)
    assert d != 5000 and d > 2
    ready = 1000 + d
    sim = _sim()
    reqs = [make_request(i, 0, 32, 400) for i in range(4)]
    early, late = make_request(4, ready - 1, 32, 2), make_request(5, ready + 1, 32, 2)
    sim.run([*reqs, early, late])
    assert early.handled_by == 0 and late.handled_by == 1
    ev = sim.rec.events
    assert ev[0]["kind"] == "scale_up" and ev[0]["t_s"] == 0.001
    assert ev[1] == {
        "t_s": ready / 1e6,
        "kind": "ready",
        "replica": "instance_1",
        "load_s": d / 1e6,
    }
    assert sim.scaling_periods() == [(1000, ready)]
    s = sim.autoscaling_summary()
    assert s["replica_startup_cv"] == 0.5
    assert s["replica_load_s"] == {"count": 1, "mean": d / 1e6, "min": d / 1e6, "max": d / 1e6}
    # the seed, not the order of anything else, decides: a second run draws the same
    again = _sim()
    again.run([make_request(i, 0, 32, 400) for i in range(4)])
    assert again.rec.events[1]["load_s"] == d / 1e6
    other = _sim(seed=8)
    other.run([make_request(i, 0, 32, 400) for i in range(4)])
    assert other.rec.events[1]["load_s"] == _expected_draw(8, 0, 5000, 0.5) / 1e6 != d / 1e6


def test_cv_zero_loads_take_exactly_the_startup_and_add_no_keys():
    sim = _sim(cv=0.0)
    sim.run([make_request(i, 0, 32, 400) for i in range(4)])
    assert sim.rec.events[1] == {"t_s": 0.006, "kind": "ready", "replica": "instance_1"}
    s = sim.autoscaling_summary()
    assert "replica_startup_cv" not in s and "replica_load_s" not in s
    assert sim.scaler.load_us == []


def test_draws_have_the_mean_and_cv_asked_for():
    sim = _sim(startup=20_000_000, cv=0.4)
    draws = [sim.scaler.load_time() for _ in range(4000)]
    mean = statistics.fmean(draws)
    assert mean == pytest.approx(20_000_000, rel=0.03)
    assert statistics.pstdev(draws) / mean == pytest.approx(0.4, rel=0.08)
    assert min(draws) > 0
    # every draw is its own keyed stream: draw k does not depend on draws before it
    assert draws[10] == _expected_draw(7, 10, 20_000_000, 0.4)


def test_pools_draw_from_independent_streams():
    a = _expected_draw(7, 0, 5000, 0.5, "prefill")
    b = _expected_draw(7, 0, 5000, 0.5, "decode")
    c = _expected_draw(7, 0, 5000, 0.5, "cluster")
    assert len({a, b, c}) == 3


@settings(max_examples=20, deadline=None)
@given(
    n_max=st.integers(2, 4),
    gaps=st.lists(st.integers(0, 3000), min_size=1, max_size=30),
    cv=st.floats(0.05, 1.5),
    seed=st.integers(0, 2**32),
    target=st.floats(0.2, 3.0),
)
def test_properties_routable_only_after_own_load_and_bounds(n_max, gaps, cv, seed, target):
    sim = _sim(n_max, target=target, startup=3000, cv=cv, seed=seed)
    t, reqs = 0, []
    for i, g in enumerate(gaps):
        t += g
        reqs.append(make_request(i, t, 40, 30))
    out = sim.run(reqs)  # --check-invariants: ready + loading within [min, max]
    assert all(r.state == RequestState.FINISHED for r in reqs)
    assert sum(i.stats.completed for i in out.instances) == len(reqs)
    rec = sim.rec
    for r, lo in zip(rec.ready, rec.loading, strict=True):
        assert 1 <= r + lo <= n_max
    # every ready event ends one of the drawn loads, started at a scale-up; no request
    # reached that replica between its scale-up and that moment
    drawn = [d / 1e6 for d in sim.scaler.load_us]
    up_times = {e["t_s"] for e in rec.events if e["kind"] == "scale_up"}
    for e in rec.events:
        if e["kind"] != "ready":
            continue
        assert e["load_s"] in drawn
        drawn.remove(e["load_s"])  # each draw ends at most one load
        start = e["t_s"] - e["load_s"]
        assert any(abs(start - u) < 1e-9 for u in up_times)
        idx = int(e["replica"].rsplit("_", 1)[1])
        early = [
            r
            for r in reqs
            if r.handled_by == idx and start * 1e6 - 1 <= r.arrival_time < e["t_s"] * 1e6 - 1
        ]
        assert early == []


def _blis(*args):
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    model = ("--model", "meta-llama/llama-3.1-8b-instruct", "--rate", "30", "--num-requests", "600")
    return CliRunner().invoke(cli, ["run", *model, *args])


def test_results_file_reports_drawn_loads(tmp_path):
    path = tmp_path / "r.json"
    res = _blis(
        "--autoscale-max", "3", "--autoscale-target", "4", "--autoscale-interval", "2",
        "--replica-startup-s", "5", "--replica-startup-cv", "0.3", "--results-path", str(path),
        "--check-invariants",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(path.read_text())
    a = doc["autoscaling"]
    assert a["replica_startup_cv"] == 0.3 and doc["config"]["replica_startup_cv"] == 0.3
    ups = [e for e in a["events"] if e["kind"] == "scale_up"]
    ready = [e for e in a["events"] if e["kind"] == "ready"]
    assert ups and ready and a["replica_load_s"]["count"] >= len(ready)
    assert all(e["load_s"] > 0 for e in ready)
    assert len({e["load_s"] for e in ready}) == len(ready)  # drawn, not one constant


@pytest.mark.parametrize("value", ["-0.1", "nan", "inf"])
def test_bad_startup_cv_one_line_exit_2(value):
    res = _blis("--autoscale-max", "2", "--autoscale-target", "1", "--replica-startup-cv", value)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--replica-startup-cv" in lines[0] and value in lines[0], res.output


def test_startup_cv_without_autoscaling_is_refused():
    res = _blis("--replica-startup-cv", "0.2")
    assert res.exit_code == 2 and "needs autoscaling" in res.output


def test_yaml_key_gives_the_same_draws_as_the_flag(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "autoscale_max: 3\nautoscale_target: 4\nautoscale_interval: 2\n"
        "replica_startup_s: 5\nreplica_startup_cv: 0.3\n"
    )
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    res = _blis("--config", str(cfg), "--results-path", str(a))
    assert res.exit_code == 0, res.output
    res = _blis(
        "--autoscale-max", "3", "--autoscale-target", "4", "--autoscale-interval", "2",
        "--replica-startup-s", "5", "--replica-startup-cv", "0.3", "--results-path", str(b),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    ea = json.loads(a.read_text())["autoscaling"]["events"]
    eb = json.loads(b.read_text())["autoscaling"]["events"]
    assert ea == eb and any("load_s" in e for e in ea)


def test_the_derived_start_up_reads_the_whole_checkpoint_at_any_tp():
    """vLLM's default loader reads every tensor whole on each TP rank (and slices it on
    the GPU): the node reads the whole checkpoint, so TP does not shorten the load."""
    from inference_sim.config.autoscale import startup_seconds
    from inference_sim.config.resolve import resolve

    base = {"model": "meta-llama/llama-3.1-8b-instruct", "hardware": "H100", "autoscale_max": 2,
            "autoscale_target": 4}  # fmt: skip
    one, why = startup_seconds(resolve({**base, "tp": 1}))
    two, _ = startup_seconds(resolve({**base, "tp": 2}))
    assert one == two == pytest.approx(20 + 16.06 / 2, abs=0.01)
    assert why == "20 s engine start + 16.06 GB of weights at 2 GB/s"
