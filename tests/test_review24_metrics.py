"""Review 24: per-stage counts of refused and dropped requests, the lost-requests
warning, and admission policies named as the user gives them in warnings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference_sim import simulate
from inference_sim.cluster.simulator import ClusterSimulator, admission_policy_name
from inference_sim.config.resolve import resolve
from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.metrics.outcome import SimulationOutcome
from inference_sim.metrics.summary import build_stage_summaries, stage_groups
from inference_sim.policies.admission import ADMISSION, RejectAll, TokenBucket
from inference_sim.policies.base import AdmissionDecision, RouterState
from inference_sim.runner import build_requests
from simhelpers import make_request

MODEL = "meta-llama/llama-3.1-8b-instruct"
KW: dict[str, Any] = {"model": MODEL, "alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}


def staged_spec() -> dict[str, Any]:
    """Two stages; prompts long enough that a --max-model-len of 600 refuses many."""
    return {
        "version": "2",
        "seed": 3,
        "stages": [{"rate": 20, "duration": 3}, {"rate": 40, "duration": 2}],
        "clients": [
            {
                "id": "a",
                "tenant_id": "ta",
                "rate_fraction": 1,
                "arrival": {"process": "poisson"},
                "input_distribution": {"type": "exponential", "params": {"mean": 500}},
                "output_distribution": {"type": "constant", "params": {"value": 10}},
            }
        ],
    }


def generated(opts: dict[str, Any]) -> list[Request]:
    """The requests the run of ``opts`` generates (same seed), before any refusal."""
    plan = resolve(opts)
    return list(build_requests(plan, RandomStreams(plan.options["seed"])))


def per_stage(reqs: list[Request], stages: list[dict[str, Any]], pick: Any) -> list[int]:
    return [
        sum(1 for r in reqs if st["start_s"] <= r.arrival_time / 1e6 < st["end_s"] and pick(r))
        for st in stages
    ]


def test_stage_arrivals_count_requests_refused_as_too_long():
    """Refused requests arrived: they count in ``arrived_requests`` and ``offered_rate``
    (they are in no request log), and in the stage's ``rejected_too_long``."""
    opts = {**KW, "workload_spec": staged_spec(), "max_model_len": 600}
    res = simulate(**opts)
    reqs = generated(opts)
    stages = res.summary["stages"]
    too_long = per_stage(reqs, stages, lambda r: r.num_prompt_tokens + r.num_output_tokens > 600)
    arrived = per_stage(reqs, stages, lambda r: True)
    assert res.summary["rejected_too_long"] == sum(too_long) > 0
    assert [s["arrived_requests"] for s in stages] == arrived
    assert [s["rejected_too_long"] for s in stages] == too_long
    assert [s["offered_rate"] for s in stages] == [arrived[0] / 3.0, arrived[1] / 2.0]
    for s in stages:
        assert s["rejected_requests"] == s["dropped_unservable"] == 0
        assert s["completed_requests"] == s["arrived_requests"] - s["rejected_too_long"]


def test_stage_counts_admission_rejections():
    """A token bucket refuses part of each stage: the stage's arrivals include them and
    ``rejected_requests`` adds up to the run's."""
    opts = {
        **KW,
        "workload_spec": staged_spec(),
        "admission_policy": "token-bucket",
        "token_bucket_capacity": 3000,
        "token_bucket_refill_rate": 4000,
    }
    res = simulate(**opts)
    stages = res.summary["stages"]
    arrived = per_stage(generated(opts), stages, lambda r: True)
    assert [s["arrived_requests"] for s in stages] == arrived
    assert sum(s["rejected_requests"] for s in stages) == res.summary["rejected_requests"] > 0
    assert all(s["rejected_requests"] > 0 for s in stages)
    for s in stages:
        assert s["completed_requests"] == s["arrived_requests"] - s["rejected_requests"]


def test_stage_counts_requests_dropped_as_unservable():
    """Dropped requests reached an instance but are in no log either: the stage's
    ``dropped_unservable`` is what is left, and adds up to the run's."""
    opts = {**KW, "workload_spec": staged_spec(), "total_kv_blocks": 40, "block_size": 16}
    res = simulate(**opts)
    stages = res.summary["stages"]
    reqs = generated(opts)
    assert [s["arrived_requests"] for s in stages] == per_stage(reqs, stages, lambda r: True)
    assert sum(s["dropped_unservable"] for s in stages) == res.summary["dropped_unservable"] > 0
    for s in stages:
        assert s["completed_requests"] == s["arrived_requests"] - s["dropped_unservable"]


def test_stage_of_refused_requests_only_reports_its_arrivals_and_no_latency():
    """A stage whose every request was refused: its arrivals and refusals are counted,
    and its latency keys are 0 with ``completed_requests`` 0, as the summary's are when
    nothing completed."""
    stages = [(0, 1_000_000, 5.0), (1_000_000, 2_000_000, 5.0)]
    reqs = [make_request(i, 100_000 * i, 40, 4) for i in range(10)]
    reqs += [make_request(10 + i, 1_000_000 + 100_000 * i, 400, 4) for i in range(10)]
    sim = _build(max_model_len=200)
    outcome = sim.run(list(stage_groups(reqs, stages)))
    first, second = build_stage_summaries(outcome, stages)
    assert (first["arrived_requests"], first["completed_requests"]) == (10, 10)
    assert (second["arrived_requests"], second["offered_rate"]) == (10, 10.0)
    assert (second["rejected_too_long"], second["completed_requests"]) == (10, 0)
    assert second["e2e_mean_ms"] == second["ttft_p99_ms"] == second["itl_mean_ms"] == 0.0


def test_a_hand_built_outcome_keeps_the_log_only_counts():
    """Without the simulator's per-group counts, arrivals are the logged requests and
    the refusal keys 0 (the entry has the same keys)."""
    stages = [(0, 2_000_000, 5.0)]
    reqs = [make_request(i, 100_000 * i, 40, 4) for i in range(5)]
    outcome = _build().run(list(stage_groups(reqs, stages)))
    plain = SimulationOutcome(
        requests=None,
        instances=outcome.instances,
        horizon=outcome.horizon,
        end_time=outcome.end_time,
        log=outcome.log,
    )
    (entry,) = build_stage_summaries(plain, stages)
    assert entry["arrived_requests"] == 5
    assert entry["rejected_requests"] == entry["rejected_too_long"] == 0
    assert build_stage_summaries(outcome, stages)[0].keys() == entry.keys()


# --- the lost-requests warning ---------------------------------------------------------


def _build(**cluster: Any) -> ClusterSimulator:
    cfg = EngineConfig(
        num_gpu_blocks=cluster.pop("blocks", 20_000),
        block_size=16,
        max_num_seqs=64,
        max_num_batched_tokens=2048,
    )
    inst = FastInstance(0, cfg, BlackboxLatencyModel((0.0, 0.0, 0.0), (1000.0, 1.0, 1.0)))
    return ClusterSimulator([inst], **cluster)


def _mixed(n_short: int, n_long: int) -> list[Request]:
    reqs = [make_request(i, 10_000 * i, 40, 4) for i in range(n_short)]
    reqs += [make_request(n_short + i, 10_000 * i + 5, 400, 4) for i in range(n_long)]
    return reqs


class _Messages(logging.Handler):
    """Each warning of the package logger, once (``caplog`` may see a record twice)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def lost(self) -> list[str]:
        return [m for m in self.messages if "were refused or dropped" in m]

    def count(self, text: str) -> int:
        return sum(text in m for m in self.messages)


@pytest.fixture
def warned() -> Iterator[_Messages]:
    logger = logging.getLogger("inference_sim")
    handler = _Messages()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_warns_once_when_a_large_share_is_refused(warned):
    _build(max_model_len=200).run(_mixed(6, 4))
    (msg,) = warned.lost()
    assert "4 of 10 arrived requests (40.0%)" in msg
    assert "4 rejected_too_long" in msg and "--max-model-len 200" in msg


def test_warning_names_every_reason_with_its_option(warned):
    class HalfGate:
        def admit(self, request: Request, state: RouterState) -> AdmissionDecision:
            return AdmissionDecision(request.index % 2 == 0, "odd")

    reqs = [*_mixed(8, 2), make_request(10, 0, 250, 4)]  # 16 blocks > 10: unservable
    _build(max_model_len=300, admission=HalfGate(), blocks=10).run(reqs)
    (msg,) = warned.lost()
    assert "2 rejected_too_long" in msg
    assert "4 rejected_requests by admission policy" in msg and "--admission-policy" in msg
    assert "1 dropped_unservable" in msg and "--total-kv-blocks" in msg


def test_no_warning_below_the_threshold(warned):
    _build(max_model_len=200).run(_mixed(19, 1))  # 5 %
    assert warned.messages == []


def test_nothing_completed_warns_once_not_twice(warned):
    _build(max_model_len=200).run(_mixed(0, 3))
    assert warned.lost() == []
    assert warned.count("no requests completed") == 1


# --- admission policies named as the user gives them ------------------------------------


class Gate:
    """A user plug-in that refuses everything."""

    def admit(self, request: Request, state: RouterState) -> AdmissionDecision:
        return AdmissionDecision(False, "gate")


def test_nothing_completed_warning_names_the_registered_policy(sim_log):
    _build(admission=RejectAll()).run(_mixed(3, 0))
    assert 'rejected by admission policy "reject-all"' in sim_log.text
    assert "RejectAll" not in sim_log.text


def test_policy_names_for_built_ins_and_plug_ins(monkeypatch, tmp_path: Path):
    assert admission_policy_name(RejectAll()) == "reject-all"
    assert admission_policy_name(TokenBucket()) == "token-bucket"  # built by a function
    assert admission_policy_name(Gate()) == f"{Gate.__module__}:Gate"
    monkeypatch.setitem(ADMISSION._factories, "my-gate", Gate)
    assert admission_policy_name(Gate()) == "my-gate"
    plugin = tmp_path / "gate_plugin.py"
    plugin.write_text(Path(__file__).read_text().split("class Gate:")[0] + GATE_SOURCE)
    gate = ADMISSION.create(f"{plugin}:FileGate")
    assert admission_policy_name(gate) == f"{plugin.resolve()}:FileGate"


GATE_SOURCE = """
class FileGate:
    def admit(self, request, state):
        return False
"""


def test_cli_warning_names_a_file_plug_in(tmp_path: Path, sim_log):
    plugin = tmp_path / "my_gate.py"
    plugin.write_text(GATE_SOURCE)
    simulate(**KW, num_requests=4, admission_policy=f"{plugin}:FileGate")
    assert f'admission policy "{plugin.resolve()}:FileGate"' in sim_log.text
