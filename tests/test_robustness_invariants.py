"""``--check-invariants`` (engine/invariants.py): correct runs pass, and each kind of
simulator bug (injected here) stops the run at the first violation with one line naming
the time, the instance and the request."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.core.request import Request
from inference_sim.engine.events import NEVER
from inference_sim.engine.invariants import InvariantChecker, InvariantViolation
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.policies.admission import AlwaysAdmit
from simhelpers import fresh_tokens, make_request, simulate_requests

MODEL = "meta-llama/llama-3.1-8b-instruct"
LINE = re.compile(r"^invariant violated at t=-?\d+ µs(, instance_\d+)?(, request_\d+)?: .+$")


def _requests(n: int = 30, prompt: int = 100, output: int = 40, gap: int = 500) -> list[Request]:
    return [make_request(i, i * gap, prompt, output) for i in range(n)]


def _run(instances, requests, **kw):
    return ClusterSimulator(instances, check_invariants=True, **kw).run(requests)


def _instances(n: int = 1, cls=FastInstance, blocks: int = 2000, **cfg) -> list:
    config = EngineConfig(num_gpu_blocks=blocks, block_size=16, **cfg)
    latency = BlackboxLatencyModel((0.0, 0.0, 0.0), (1000.0, 1.0, 1.0))
    return [cls(i, config, latency) for i in range(n)]


# --- correct runs pass ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},  # plenty of room
        {"num_gpu_blocks": 40},  # preemptions
        {"num_gpu_blocks": 12, "max_num_batched_tokens": 64},  # drops and chunked prefill
        {"num_instances": 3, "horizon": 20_000},  # cut by the horizon
        {"exact_steps": True, "num_gpu_blocks": 40},
    ],
)
def test_correct_runs_pass_every_check(kw):
    shared = fresh_tokens(64)
    reqs = [
        make_request(i, i * 300, shared + fresh_tokens(40 + i % 7 * 30), 5 + i % 11)
        for i in range(40)
    ]
    out = simulate_requests(reqs, check_invariants=True, **kw)
    assert out.generated == 40


def test_rejections_and_in_flight_requests_are_accounted_for():
    class EveryOther(AlwaysAdmit):
        def admit(self, req, state):
            return req.index % 2 == 0

    insts = _instances(2)
    reqs = [*_requests(20), make_request(20, 20 * 500, 5000, 10)]
    out = _run(
        insts, reqs, admission=EveryOther(), routing_latency=300, max_model_len=4000, horizon=6_000
    )
    assert out.rejected + out.rejected_too_long > 0


# --- injected bugs are caught -----------------------------------------------------------


def _violation(instances, requests=None, **kw) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as info:
        _run(instances, requests or _requests(), **kw)
    message = str(info.value)
    assert "\n" not in message
    assert LINE.match(message), message
    return info.value


class LeaksBlocks(FastInstance):
    """Loses track of a block: drops it from a block table without releasing it."""

    def step(self, now, t_limit=NEVER, horizon=NEVER):
        nxt = super().step(now, t_limit, horizon)
        for table in self.kv.tables.values():
            if len(table) > 1:
                table.pop()
                break
        return nxt


def test_kv_leak_is_caught():
    v = _violation(_instances(cls=LeaksBlocks))
    assert "KV block conservation" in str(v) and v.instance == "instance_0"


class LosesRequests(FastInstance):
    """Drops a waiting request on the floor (no state, no counter)."""

    def step(self, now, t_limit=NEVER, horizon=NEVER):
        if len(self.waiting) > 1:
            self.waiting.pop()
        return super().step(now, t_limit, horizon)


def test_lost_request_is_caught():
    v = _violation(_instances(cls=LosesRequests), _requests(30, gap=10))
    assert "request conservation" in str(v)


class ForgetsToContinue(FastInstance):
    """Stops its step chain while requests are still running."""

    def step(self, now, t_limit=NEVER, horizon=NEVER):
        super().step(now, t_limit, horizon)
        return None


def test_broken_step_chain_is_caught():
    v = _violation(_instances(cls=ForgetsToContinue))
    assert "work conservation" in str(v) and v.request is not None


class NegativeSteps(BlackboxLatencyModel):
    def step_time(self, batch):
        return -5


def test_step_ending_before_it_starts_is_caught():
    config = EngineConfig(num_gpu_blocks=2000, block_size=16)
    v = _violation([FastInstance(0, config, NegativeSteps((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))])
    assert "before it starts" in str(v) or "clock" in str(v)


class TimeTravel(BlackboxLatencyModel):
    def queueing_time(self, req):
        return -1000  # a request enters the wait queue before it was routed


def test_clock_going_back_is_caught():
    config = EngineConfig(num_gpu_blocks=2000, block_size=16)
    inst = FastInstance(0, config, TimeTravel((0.0, 0.0, 0.0), (1000.0, 1.0, 1.0)))
    v = _violation([inst], _requests(5, gap=5000))
    assert "clock went back" in str(v) and v.request is not None


def test_causality_violation_in_the_log_is_caught():
    class Backdated(FastInstance):
        def step(self, now, t_limit=NEVER, horizon=NEVER):
            for r in self.waiting:
                r.first_scheduled_time = -1
            nxt = super().step(now, t_limit, horizon)
            for r in self.running:
                r.first_scheduled_time = r.arrival_time - 7  # scheduled before it arrived
            return nxt

    v = _violation(_instances(cls=Backdated), _requests(5, gap=20_000))
    assert "causality" in str(v)


def test_checker_costs_nothing_when_off(monkeypatch):
    """With checking off the simulator never builds a checker."""

    def boom(*a, **k):
        raise AssertionError("checker built with checking off")

    monkeypatch.setattr("inference_sim.cluster.simulator.InvariantChecker", boom)
    out = ClusterSimulator(_instances(), check_invariants=False).run(_requests(5))
    assert out.generated == 5


def test_full_kv_scan_runs_periodically(monkeypatch):
    calls = []
    monkeypatch.setattr(InvariantChecker, "full_kv_every", 4)
    orig = InvariantChecker._full_kv
    monkeypatch.setattr(
        InvariantChecker,
        "_full_kv",
        lambda self, inst, now: calls.append(now) or orig(self, inst, now),
    )
    _run(_instances(), _requests(10))
    assert len(calls) > 2


# --- through the CLI -------------------------------------------------------------------


def test_cli_reports_the_first_violation_in_one_line(monkeypatch):
    monkeypatch.setattr(
        "inference_sim.runner.make_instance",
        lambda i, cfg, lat, **kw: LeaksBlocks(i, cfg, lat, **kw),
    )
    args = ["run", "--model", MODEL, "--num-requests", "20", "--check-invariants"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "Error: simulation failed: InvariantViolation: invariant violated at t="
    )
    assert "instance_0" in lines[0] and "KV block conservation" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_passes_with_checks_on():
    args = [
        "run",
        "--model",
        MODEL,
        "--num-requests",
        "50",
        "--rate",
        "30",
        "--num-instances",
        "2",
        "--total-kv-blocks",
        "200",
        "--check-invariants",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
