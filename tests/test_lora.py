"""Multi-LoRA serving (issue 18, docs/lora.md): vLLM v1's max_loras rule (skip, not
block), adapter residency and load costs, the results section, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_sim.cli.main import cli
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.config.resolve import resolve
from inference_sim.core.request import Request, RequestState
from inference_sim.engine.invariants import InvariantViolation
from inference_sim.instance import LoraInstance, make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.lora import LoraState
from inference_sim.instance.lora_config import LoraSettings
from inference_sim.latency.blackbox import BlackboxLatencyModel

MODEL = "meta-llama/llama-3.1-8b-instruct"
BETA = (1000.0, 1.0, 1.0)  # 1 ms a step plus 1 µs a token


def _req(i: int, t: int, adapter: str, prompt: int = 32, out: int = 4, rank: int = 0) -> Request:
    return Request(
        i,
        t,
        [(i * 31 + k) % 1000 for k in range(prompt)],
        list(range(out)),
        adapter=adapter,
        adapter_rank=rank,
    )


def _engine(lora: LoraSettings | None, **kw: Any) -> EngineConfig:
    return EngineConfig(num_gpu_blocks=kw.pop("blocks", 4000), lora=lora, **kw)


def _run(reqs: list[Request], lora: LoraSettings, cls: type = LoraInstance, **kw: Any):
    inst = cls(0, _engine(lora, **kw), BlackboxLatencyModel((0, 0, 0), BETA))
    sim = ClusterSimulator([inst], check_invariants=True)
    return sim.run(reqs), inst


class _Watched(LoraInstance):
    """Records, for every executed step, the batch's adapters and what the GPU holds."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.seen: list[tuple[set[str], set[str]]] = []

    def execute(self, batch, now):  # type: ignore[no-untyped-def]
        end = super().execute(batch, now)
        used = {r.adapter for r in batch.requests if r.adapter}
        self.seen.append((used, set(self.lora.gpu)))
        return end


def test_make_instance_picks_the_lora_stepper_only_when_lora_is_on():
    lat = BlackboxLatencyModel((0, 0, 0), BETA)
    assert isinstance(make_instance(0, _engine(LoraSettings()), lat), LoraInstance)
    assert not isinstance(make_instance(0, _engine(None), lat), LoraInstance)


def test_skip_not_block_vector():
    """max_loras 1: B (adapter y) waits behind A (x); C (x) behind B is admitted at once."""
    a = _req(0, 0, "x", out=50)
    b = _req(1, 10, "y", out=2)
    c = _req(2, 20, "x", out=2)
    _, inst = _run([a, b, c], LoraSettings(max_loras=1, max_cpu_loras=2))
    assert all(r.state == RequestState.FINISHED for r in (a, b, c))
    # C overtook B: admitted while A (same adapter) runs, B only after A finished.
    assert c.first_scheduled_time < b.first_scheduled_time
    assert b.first_scheduled_time >= a.finish_time
    assert c.finish_time < a.finish_time
    assert inst.lora.skip_events > 0
    assert inst.lora.skipped_requests == {1}
    # Head-of-line blocking would have held C until B ran: it did not.
    assert c.first_scheduled_time < a.finish_time


def test_cold_adapter_costs_disk_and_host_to_gpu_load():
    s = LoraSettings(
        max_loras=1,
        max_cpu_loras=1,
        bytes_per_rank=1_000_000.0,
        cpu_gpu_bandwidth=10_000.0,
        cpu_gpu_base_latency=50,
        disk_bandwidth=1_000.0,
        disk_base_latency=3000,
    )
    base = _req(0, 0, "", out=1)
    _run([base], s)
    cold = _req(1, 0, "x", out=1, rank=8)
    _, inst = _run([cold], s)
    load = (3000 + 8_000_000 // 1_000) + (50 + 8_000_000 // 10_000)
    assert cold.first_token_time - base.first_token_time == load
    assert (inst.lora.cpu_loads, inst.lora.gpu_loads) == (1, 1)
    assert inst.lora.load_time == load


def test_lru_residency_counts_loads_and_evictions():
    """max_loras 1, host keeps 2: x, y, x (host hit), z (evicts y from host), x."""
    s = LoraSettings(max_loras=1, max_cpu_loras=2)
    reqs = [_req(i, i * 100_000, name, out=1) for i, name in enumerate("xyxzx")]
    _, inst = _run(reqs, s)
    lo = inst.lora
    assert lo.gpu_loads == 5 and lo.gpu_evictions == 4
    assert lo.cpu_loads == 3  # x, y, z from disk; x twice from host
    assert lo.cpu_evictions == 1
    assert list(lo.cpu) == ["z", "x"] and list(lo.gpu) == ["x"]


def test_step_cost_grows_with_distinct_adapters_and_reads_padded_slots():
    """Each distinct adapter's slot is read at max_lora_rank (vLLM's kernels take the
    slot's padded shape), whatever the adapter's own rank."""
    s = LoraSettings(max_loras=4, max_cpu_loras=4, max_lora_rank=8, bytes_per_rank=1e6,
                     hbm_bandwidth=2e6, step_overhead_per_adapter=5.0)  # fmt: skip
    assert s.step_cost([]) == 0
    assert s.step_cost([8]) == 5 + 4  # 8 MB at 2 MB/µs
    assert s.step_cost([8, 8]) == 2 * s.step_cost([8])
    assert s.step_cost([2]) == s.step_cost([8])  # a rank-2 adapter in a rank-8 slot
    wide = LoraSettings(max_loras=4, max_cpu_loras=4, max_lora_rank=64, bytes_per_rank=1e6,
                        hbm_bandwidth=2e6, step_overhead_per_adapter=5.0)  # fmt: skip
    assert wide.step_cost([8]) == 5 + 32  # the same adapter in rank-64 slots
    # Activation traffic per LoRA token: 3 MB per token at 2 MB/µs = 1.5 µs a token.
    t = LoraSettings(max_loras=4, max_cpu_loras=4, max_lora_rank=8, bytes_per_rank=1e6,
                     hbm_bandwidth=2e6, token_bytes=3e6)  # fmt: skip
    assert t.step_cost([8], 0) == 4
    assert t.step_cost([8], 100) == 4 + 150


def test_lora_bytes_by_hand():
    """Shrink reads every adapted layer's input, expand reads and writes its output:
    Llama-3.1-8B (hidden 4096, 32 query / 8 KV heads of 128, FFN 14336, 32 layers, BF16).
    Under TP, column-parallel layers (q, k, v, gate, up) keep A and their input whole and
    split B and the output; row-parallel ones (o, down) the reverse."""
    from inference_sim.catalog.architecture import bundled_architecture
    from inference_sim.catalog.lora import (
        adapter_bytes_per_rank,
        adapter_file_bytes_per_rank,
        lora_token_bytes,
    )

    arch = bundled_architecture(MODEL)
    d, q, kv, ffn = 4096, 4096, 1024, 14336
    d_in = 5 * d + q + ffn
    d_out = q + 2 * kv + d + 2 * ffn + d
    assert lora_token_bytes(arch) == 32 * (d_in + 2 * d_out) * 2
    col_in, col_out = 3 * d + 2 * d, q + 2 * kv + 2 * ffn  # q, k, v, gate, up
    row_in, row_out = q + ffn, 2 * d  # o, down
    assert lora_token_bytes(arch, 2) == 32 * 2 * (
        col_in + 2 * col_out / 2 + row_in / 2 + 2 * row_out
    )
    assert (
        adapter_bytes_per_rank(arch) == adapter_file_bytes_per_rank(arch) == 32 * 2 * (d_in + d_out)
    )
    per_gpu = 32 * 2 * (col_in + col_out / 8 + row_in / 8 + row_out)
    assert adapter_bytes_per_rank(arch, 8) == per_gpu  # about 2.3 / 8 of the adapter
    assert 0.4 < per_gpu / adapter_file_bytes_per_rank(arch) < 0.45


def test_prefill_heavy_lora_steps_cost_more_than_the_weights_alone():
    """The per-token term: 0.1 µs per LoRA token (1e5 bytes at 1e6 bytes/µs) adds about
    51 µs to a 512-token prefill step and nothing measurable to a 1-token one."""

    def first_token(prompt: int, token_bytes: float) -> int:
        lora = LoraSettings(
            max_loras=1, max_cpu_loras=1, adapters=(("a", 8),), bytes_per_rank=1e5,
            hbm_bandwidth=1e6, token_bytes=token_bytes,
        )  # fmt: skip
        reqs = [_req(0, 0, "a", prompt=prompt, out=1)]
        _run(reqs, lora)
        return reqs[0].first_token_time

    assert first_token(512, 1e5) - first_token(512, 0.0) == round(512 * 0.1)
    assert first_token(1, 1e5) - first_token(1, 0.0) == 0


def test_invariant_catches_a_batch_running_with_an_adapter_not_loaded():
    class NoLoad(LoraState):
        def make_resident(self, names: list[str]) -> int:
            return 0  # a bug: loads nothing

    class Broken(LoraInstance):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.lora = NoLoad(self.lora.settings)

    with pytest.raises(InvariantViolation, match="not loaded"):
        _run([_req(0, 0, "x")], LoraSettings(), cls=Broken)


@st.composite
def _workloads(draw: Any) -> tuple[list[Request], LoraSettings, int]:
    n = draw(st.integers(1, 25))
    names = ["", "a", "b", "c", "d", "e"]
    reqs = []
    t = 0
    for i in range(n):
        t += draw(st.integers(0, 3000))
        reqs.append(
            _req(
                i,
                t,
                draw(st.sampled_from(names)),
                prompt=draw(st.integers(1, 200)),
                out=draw(st.integers(1, 20)),
            )
        )
    max_loras = draw(st.integers(1, 3))
    s = LoraSettings(
        max_loras=max_loras,
        max_cpu_loras=max_loras + draw(st.integers(0, 2)),
        bytes_per_rank=draw(st.sampled_from([0.0, 1e5])),
        hbm_bandwidth=draw(st.sampled_from([0.0, 3e6])),
    )
    return reqs, s, draw(st.sampled_from([64, 256, 2048]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_workloads())
def test_no_batch_exceeds_max_loras_and_adapters_are_loaded(case):
    reqs, s, budget = case
    for r in reqs:  # one rank per adapter (a request giving another is bad input)
        r.adapter_rank = 3 * "abcde".index(r.adapter) + 1 if r.adapter else 0
    _, inst = _run(reqs, s, cls=_Watched, max_num_batched_tokens=budget, blocks=200)
    assert inst.seen
    for used, gpu in inst.seen:
        assert len(used) <= s.max_loras
        assert used <= gpu
        assert len(gpu) <= s.max_loras
    assert len(inst.lora.cpu) <= s.max_cpu_loras
    finished = [r for r in reqs if r.state == RequestState.FINISHED]
    assert len(finished) + sum(r.state == RequestState.DROPPED for r in reqs) == len(reqs)
    assert sum(len(v[0]) for v in inst.lora.per_adapter.values()) == len(finished)


# --- through the CLI -----------------------------------------------------------------


def _blis(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_error(result: Any) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


SPEC = """\
version: "2"
seed: 3
aggregate_rate: 40
num_requests: 120
clients:
  - id: a
    rate_fraction: 0.5
    adapter: sql
    arrival: {process: poisson}
    input_distribution: {type: constant, params: {value: 128}}
    output_distribution: {type: constant, params: {value: 16}}
  - id: b
    rate_fraction: 0.5
    adapter: chat
    adapter_rank: %d
    arrival: {process: poisson}
    input_distribution: {type: constant, params: {value: 128}}
    output_distribution: {type: constant, params: {value: 16}}
"""


def test_cli_run_writes_the_lora_section(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC % 8, encoding="utf-8")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"model: {MODEL}\nlora:\n  max_loras: 1\n  max_cpu_loras: 2\n  adapters:\n"
        f"    - {{id: sql, rank: 16, base_model: {MODEL}}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.json"
    r = _blis("run", "--config", cfg, "--workload-spec", spec, "--results-path", out,
              "--check-invariants")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = json.loads(out.read_text())
    lora = doc["lora"]
    assert set(lora["adapters"]) == {"sql", "chat"}
    assert sum(a["completed_requests"] for a in lora["adapters"].values()) == 120
    assert lora["instances"]["instance_0"]["max_adapters_in_batch"] == 1
    assert lora["requests_skipped_for_max_loras"] > 0
    assert lora["adapter_loads"] >= 2
    assert doc["config"]["max_loras"] == 1
    assert doc["config"]["lora_adapters"] == ["sql:16", "chat:8"] or doc["config"][
        "lora_adapters"
    ] == ["sql:16"]


def test_cli_results_without_lora_have_no_lora_keys(tmp_path: Path):
    out = tmp_path / "r.json"
    r = _blis("run", "--model", MODEL, "--num-requests", 20, "--results-path", out)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(out.read_text())
    assert "lora" not in doc
    assert not any("lora" in k for k in doc["config"])


def test_bad_adapter_for_another_base_model_exits_2():
    line = _one_error(_blis("run", "--model", MODEL, "--num-requests", 5,
                            "--lora-adapters", "sql:8:qwen/qwen2.5-7b-instruct"))  # fmt: skip
    assert "sql" in line and "qwen/qwen2.5-7b-instruct" in line and MODEL in line


def test_rank_above_max_lora_rank_exits_2():
    line = _one_error(_blis("run", "--model", MODEL, "--num-requests", 5,
                            "--lora-adapters", "sql:32", "--max-lora-rank", "16"))  # fmt: skip
    assert "rank 32" in line and "--max-lora-rank" in line


def test_client_rank_above_max_lora_rank_exits_2(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC % 64, encoding="utf-8")
    line = _one_error(_blis("run", "--model", MODEL, "--workload-spec", spec))
    assert "adapter_rank 64" in line and "--max-lora-rank 16" in line


def test_max_cpu_loras_below_max_loras_exits_2():
    line = _one_error(_blis("run", "--model", MODEL, "--num-requests", 5,
                            "--max-loras", 4, "--max-cpu-loras", 2))  # fmt: skip
    assert "--max-cpu-loras" in line


def test_bad_lora_block_key_exits_2(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {MODEL}\nlora:\n  max_lora: 2\n", encoding="utf-8")
    line = _one_error(_blis("run", "--config", cfg, "--num-requests", 5))
    assert "lora.max_lora" in line


def _trace_v2(tmp_path: Path, adapter: str, rank: str) -> Path:
    from inference_sim.workload.trace_v2 import COLUMNS, LORA_COLUMNS

    row = {c: "0" for c in COLUMNS}
    row.update(client_id="", tenant_id="", slo_class="", session_id="", prefix_group="",
               reason_ratio="", error_message="")  # fmt: skip
    row.update(request_id="0", input_tokens="40", output_tokens="3", arrival_time_us="0",
               streaming="false", status="ok")  # fmt: skip
    path = tmp_path / "t.csv"
    header = ",".join((*COLUMNS, *LORA_COLUMNS))
    path.write_text(header + "\n" + ",".join([*(row[c] for c in COLUMNS), adapter, rank]) + "\n")
    return path


def test_trace_v2_adapter_column_reaches_the_engine(tmp_path: Path):
    path = _trace_v2(tmp_path, "sql", "8")
    out = tmp_path / "r.json"
    r = _blis("run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath",
              path, "--max-loras", 1, "--results-path", out)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert json.loads(out.read_text())["lora"]["adapters"]["sql"]["completed_requests"] == 1


def test_adapter_in_trace_with_lora_off_exits_2(tmp_path: Path):
    path = _trace_v2(tmp_path, "sql", "")
    line = _one_error(_blis("run", "--model", MODEL, "--workload", "traces",
                            "--workload-traces-filepath", path))  # fmt: skip
    assert "sql" in line and "--max-loras" in line


def test_lora_slots_reduce_derived_kv_capacity():
    common = {
        "model": MODEL,
        "latency_model": "roofline",
        "hardware": "L40S",
        "tp": 1,
    }  # no trained blocks
    plain = resolve(common).engine.num_gpu_blocks
    plan = resolve({**common, "max_loras": 4, "max_lora_rank": 64})
    assert plan.engine.lora is not None and plan.engine.lora.bytes_per_rank > 0
    lost = plain - plan.engine.num_gpu_blocks
    slots = 4 * 64 * plan.engine.lora.bytes_per_rank
    assert lost > 0
    assert abs(lost - slots / plan.engine.kv_block_bytes) <= 1.5


def test_adapter_affinity_scorer_keeps_adapters_on_their_instances(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC % 8, encoding="utf-8")
    loads = {}
    for name, policy in (
        ("rr", ["--routing-policy", "round-robin"]),
        ("aff", ["--routing-policy", "weighted", "--routing-scorers",
                 "adapter-affinity:5,queue-depth:1"]),
    ):  # fmt: skip
        out = tmp_path / f"{name}.json"
        r = _blis("run", "--model", MODEL, "--workload-spec", spec, "--max-loras", 1,
                  "--num-instances", 2, *policy, "--results-path", out)  # fmt: skip
        assert r.exit_code == 0, r.stderr
        loads[name] = json.loads(out.read_text())["lora"]
    # Two adapters, two instances, one slot each: affinity loads each adapter once.
    assert loads["aff"]["adapter_loads"] == 2
    assert loads["aff"]["requests_skipped_for_max_loras"] == 0
    assert loads["rr"]["adapter_loads"] > loads["aff"]["adapter_loads"]


def test_adapter_affinity_scorer_unit():
    from inference_sim.policies.base import RouterState
    from inference_sim.policies.scorers import AdapterAffinityScorer

    # llm-d's lora-affinity scores: loaded 1, a free adapter slot 0.8, full 0.
    sc = AdapterAffinityScorer(num_instances=2, max_loras=1)
    state = RouterState(None, 0, build=list, num_instances=2)
    x, y = _req(0, 0, "x"), _req(1, 0, "y")
    assert sc.score(x, state) == [0.8, 0.8]
    sc.observe(x, 1)
    assert sc.score(x, state) == [0.8, 1.0]
    assert sc.score(y, state) == [0.8, 0.0]  # instance 1's one slot holds x
    sc.observe(y, 1)  # one slot: y replaces x on instance 1
    assert sc.score(x, state) == [0.8, 0.0]
    assert sc.score(y, state) == [0.8, 1.0]
    # A base-model request: llm-d's target model (the base) is never an active adapter,
    # so a free slot scores 0.8 and a full instance 0.
    assert sc.score(_req(2, 0, ""), state) == [0.8, 0.0]
    # A pool (autoscaled ready replicas): positions map to cluster-wide instances, so
    # what instance 1 holds follows it to position 0 when instance 0 leaves the pool.
    pool = RouterState(None, 0, build=list, num_instances=2, members=(1, 2))
    assert sc.score(y, pool) == [1.0, 0.8]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_workloads())
def test_lora_stepper_without_adapters_matches_the_plain_stepper(case):
    """No adapter in the workload: the LoRA rules change nothing (same timings)."""
    from inference_sim.instance import Instance

    reqs, s, budget = case
    for r in reqs:
        r.adapter, r.adapter_rank = "", 0
    _run(reqs, s, max_num_batched_tokens=budget, blocks=200)
    got = [(r.state, r.first_scheduled_time, r.first_token_time, r.finish_time) for r in reqs]
    for r in reqs:
        r.reset_simulation_state()
    inst = Instance(0, _engine(None, max_num_batched_tokens=budget, blocks=200),
                    BlackboxLatencyModel((0, 0, 0), BETA))  # fmt: skip
    ClusterSimulator([inst], check_invariants=True).run(reqs)
    want = [(r.state, r.first_scheduled_time, r.first_token_time, r.finish_time) for r in reqs]
    assert got == want


def test_trace_row_rank_above_max_lora_rank_exits_2(tmp_path: Path):
    path = _trace_v2(tmp_path, "sql", "64")
    line = _one_error(_blis("run", "--model", MODEL, "--workload", "traces",
                            "--workload-traces-filepath", path, "--max-loras", 1))  # fmt: skip
    assert "adapter_rank 64" in line and "--max-lora-rank 16" in line


def test_config_schema_accepts_the_lora_block():
    jsonschema = pytest.importorskip("jsonschema")
    from inference_sim.config.model import config_schema

    schema = config_schema()
    good = {"model": MODEL, "lora": {"max_loras": 2, "adapters": [{"id": "sql", "rank": 8}]}}
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"lora": {"max_lora": 2}}, schema)


def test_export_and_replay_keep_adapters(tmp_path: Path):
    from inference_sim import simulate

    path = tmp_path / "spec.yaml"
    path.write_text((SPEC % 8).replace("num_requests: 120", "num_requests: 30"), encoding="utf-8")
    export = tmp_path / "export.csv"
    first = simulate(model=MODEL, workload_spec=str(path), export_trace=str(export))
    rows = export.read_text(encoding="utf-8").splitlines()
    assert rows[0].endswith(",adapter,adapter_rank")
    assert {r.split(",")[-2] for r in rows[1:]} == {"sql", "chat"}
    replay = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(export),
                      max_loras=1)  # fmt: skip
    assert replay.summary["lora"]["adapters"] == first.summary["lora"]["adapters"]
    assert replay.records == first.records


def test_csv_trace_writer_keeps_adapters_through_a_replay(tmp_path: Path):
    """The old-style CSV writer keeps adapter columns (it used to drop them silently)."""
    from inference_sim import simulate
    from inference_sim.core.rng import RandomStreams
    from inference_sim.runner import build_requests
    from inference_sim.workload import write_csv_trace

    path = tmp_path / "spec.yaml"
    path.write_text((SPEC % 8).replace("num_requests: 120", "num_requests: 30"), encoding="utf-8")
    opts = {"model": MODEL, "workload_spec": str(path)}
    plan = resolve(opts)
    reqs = list(build_requests(plan, RandomStreams(plan.options["seed"])))
    csv_path = tmp_path / "t.csv"
    write_csv_trace(reqs, csv_path)
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    assert rows[0].endswith(",adapter,adapter_rank")
    first = simulate(**opts)
    replay = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(csv_path),
                      max_loras=2)  # fmt: skip
    assert replay.summary["lora"]["adapters"].keys() == {"sql", "chat"}
    assert {n: a["completed_requests"] for n, a in replay.summary["lora"]["adapters"].items()} == {
        n: a["completed_requests"] for n, a in first.summary["lora"]["adapters"].items()
    }


def test_html_report_has_the_lora_section(tmp_path: Path):
    """report.md promises every summary section; the lora one was missing from the page."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC % 8, encoding="utf-8")
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    r = _blis("run", "--model", MODEL, "--workload-spec", spec, "--max-loras", 1,
              "--results-path", out)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lora = json.loads(out.read_text())["lora"]
    rep = _blis("report", out, "-o", page)
    assert rep.exit_code == 0, rep.stderr
    html = page.read_text(encoding="utf-8")
    assert "<h2>LoRA adapters</h2>" in html
    for name in lora["adapters"]:  # one latency row per adapter
        assert f'<td class="l">{name}</td>' in html
    section = html.split("<h2>LoRA adapters</h2>")[1]
    assert f'<td class="">{lora["adapter_loads"]}</td>' in section


def test_kv_blocks_are_shared_only_under_the_same_adapter():
    """vLLM puts the LoRA adapter into every block hash: the same prompt under another
    adapter, or the base model, is a cache miss (it used to reuse the first one's KV)."""
    from inference_sim.policies.prefix import router_block_hashes

    prompt = list(range(1000, 1512))  # 32 full blocks

    def second_hits(first: str, second: str) -> int:
        reqs = [
            Request(0, 0, prompt, [1, 2, 3, 4], adapter=first),
            Request(1, 100_000, prompt, [5, 6, 7, 8], adapter=second),
        ]
        lora = LoraSettings(max_loras=2, max_cpu_loras=2, adapters=(("A", 8), ("B", 8)))
        _, inst = _run(reqs, lora)
        return inst.stats.cached_prompt_tokens

    assert second_hits("A", "A") == 511 // 16 * 16  # all but the token left to compute
    assert second_hits("A", "B") == 0
    assert second_hits("", "A") == 0
    assert second_hits("A", "") == 0
    # The router's prefix index keys by adapter too (llm-d indexes KV events with LoRA).
    a, b = (Request(i, 0, prompt, [1], adapter=x) for i, x in enumerate(("A", "B")))
    assert router_block_hashes(a, 16)[0] != router_block_hashes(b, 16)[0]


def test_a_disk_load_reads_the_whole_file_at_any_tp():
    """Each TP worker loads the whole adapter file into host memory; only the host -> GPU
    copy moves one GPU's share (which is more than 1 / TP of it)."""
    common = {"model": MODEL, "hardware": "H100", "max_loras": 1, "latency_model": "roofline"}
    one = resolve({**common, "tp": 1}).engine.lora
    four = resolve({**common, "tp": 4}).engine.lora
    assert one is not None and four is not None
    assert four.load_disk_to_cpu(16) == one.load_disk_to_cpu(16)
    assert one.load_cpu_to_gpu(16) > four.load_cpu_to_gpu(16) > one.load_cpu_to_gpu(16) / 4


def test_lora_without_a_gpu_says_its_step_reads_are_not_priced(sim_log):
    """Given coefficients and no --hardware: no GPU bandwidth prices the adapters' SGMV
    reads, which lora.md says every step pays; said, not silent."""
    from inference_sim.config import resolve

    base = {
        "model": "meta-llama/llama-3.1-8b-instruct",
        "beta_coeffs": "1000,10,100",
        "alpha_coeffs": "0,0,0",
        "max_loras": 1,
        "lora_adapters": "a",
    }
    resolve(base)
    assert "LoRA without --hardware" in sim_log.text
    sim_log.clear()
    resolve({**base, "hardware": "H100", "tp": 2})
    assert "LoRA without --hardware" not in sim_log.text
