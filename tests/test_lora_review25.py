"""Review 25's LoRA defects (docs/lora.md): one adapter rank cluster-wide, listed
adapters preloaded at server start, starved adapters in the results, base-model
requests scored as llm-d scores them, vLLM's --max-lora-rank values, lora: block errors
naming the file's field, and the reserved adapter name ``(base)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.config.resolve import resolve
from inference_sim.core.errors import ConfigError
from inference_sim.instance import LoraInstance
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.lora import LoraState, share_adapter_ranks
from inference_sim.instance.lora_config import MAX_LORA_RANKS, LoraSettings
from inference_sim.latency.blackbox import BlackboxLatencyModel
from test_lora import BETA, MODEL, _blis, _one_error, _req  # the same set-up and helpers


def _instance(lora: LoraSettings, index: int = 0) -> LoraInstance:
    return LoraInstance(
        index,
        EngineConfig(num_gpu_blocks=4000, lora=lora),
        BlackboxLatencyModel((0, 0, 0), BETA),
    )


def _trace(tmp_path: Path, rows: list[str], name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(
        "arrival_time,prompt_len,output_len,adapter,adapter_rank\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    return path


_CLIENT = """\
  - id: %s
    rate_fraction: 0.5
    adapter: %s
%s    arrival: {process: constant}
    input_distribution: {type: constant, params: {value: 100}}
    output_distribution: {type: constant, params: {value: 10}}
"""


def _spec(tmp_path: Path, *clients: tuple[str, str, int]) -> Path:
    body = "".join(
        _CLIENT % (cid, adapter, f"    adapter_rank: {rank}\n" if rank else "")
        for cid, adapter, rank in clients
    )
    path = tmp_path / "spec.yaml"
    path.write_text(
        'version: "2"\nseed: 1\naggregate_rate: 2\nnum_requests: 4\nclients:\n' + body,
        encoding="utf-8",
    )
    return path


# --- 1. one adapter, one rank, whatever the instance count ------------------------------


@pytest.mark.parametrize("instances", [1, 2, 4])
def test_a_second_rank_for_an_adapter_exits_2_whatever_the_instance_count(
    tmp_path: Path, instances: int
):
    path = _trace(tmp_path, ["0.0,100,10,x,8", "0.1,100,10,x,16"])
    line = _one_error(_blis("run", "--model", MODEL, "--workload", "traces",
                            "--workload-traces-filepath", path, "--num-instances", instances,
                            "--routing-policy", "round-robin", "--max-loras", 1))  # fmt: skip
    assert "adapter_rank 16 of adapter 'x' differs from its rank 8" in line
    assert "request_0" in line and "lora block" not in line


def test_the_rank_conflict_says_a_listed_rank_comes_from_the_list(tmp_path: Path):
    path = _trace(tmp_path, ["0.0,100,10,x,16"])
    line = _one_error(_blis("run", "--model", MODEL, "--workload", "traces",
                            "--workload-traces-filepath", path, "--num-instances", 2,
                            "--lora-adapters", "x:8"))  # fmt: skip
    assert "differs from its rank 8 in --lora-adapters (or the lora: block)" in line


def test_a_rank_taken_from_max_lora_rank_says_so(tmp_path: Path):
    path = _trace(tmp_path, ["0.0,100,10,x,", "0.1,100,10,x,8"])
    line = _one_error(_blis("run", "--model", MODEL, "--workload", "traces",
                            "--workload-traces-filepath", path, "--num-instances", 2,
                            "--max-loras", 1))  # fmt: skip
    assert "rank 16 (--max-lora-rank) taken by request_0" in line


def test_instances_of_one_cluster_share_the_rank_registry():
    s = LoraSettings(max_loras=1, adapters=(("a", 8),))
    insts = [_instance(s, i) for i in range(3)]
    share_adapter_ranks(insts)
    assert insts[1].lora.registry is insts[0].lora.registry is insts[2].lora.registry
    assert insts[0].lora.rank_of(_req(0, 0, "x", rank=8)) == 8
    with pytest.raises(ConfigError, match="differs from its rank 8 given by request_0"):
        insts[2].lora.rank_of(_req(1, 0, "x", rank=16))


@pytest.mark.parametrize("autoscale", [False, True])
def test_built_clusters_share_the_rank_registry(autoscale: bool):
    from inference_sim.runner import build_simulator

    opts: dict[str, Any] = {"model": MODEL, "max_loras": 1, "num_requests": 5}
    if autoscale:
        opts.update(autoscale_max=3, autoscale_target=4)
    else:
        opts["num_instances"] = 3
    sim = build_simulator(resolve(opts))
    registries = {id(inst.lora.registry) for inst in sim.instances}
    assert len(sim.instances) == 3 and len(registries) == 1


def test_conflicting_client_ranks_are_refused_up_front(tmp_path: Path):
    spec = _spec(tmp_path, ("one", "x", 8), ("two", "x", 16))
    line = _one_error(_blis("run", "--model", MODEL, "--workload-spec", spec))
    assert "client 'two'" in line and "adapter_rank 16" in line
    assert "adapter_rank 8 of workload spec client 'one'" in line


def test_a_client_rank_against_the_listed_one_is_refused_up_front(tmp_path: Path):
    spec = _spec(tmp_path, ("one", "x", 8), ("two", "y", 0))
    line = _one_error(_blis("run", "--model", MODEL, "--workload-spec", spec,
                            "--lora-adapters", "x:16"))  # fmt: skip
    assert "client 'one'" in line and "differs from its rank 16 in --lora-adapters" in line


def test_clients_with_and_without_a_rank_for_an_unlisted_adapter_are_refused(tmp_path: Path):
    spec = _spec(tmp_path, ("one", "x", 0), ("two", "x", 8))
    line = _one_error(_blis("run", "--model", MODEL, "--workload-spec", spec))
    assert "client 'one' names adapter 'x' without adapter_rank" in line
    # Listed, the rank is known: a client without one takes it.
    out = tmp_path / "r.json"
    r = _blis("run", "--model", MODEL, "--workload-spec", spec, "--lora-adapters", "x:8",
              "--results-path", out)  # fmt: skip
    assert r.exit_code == 0, r.stderr


# --- 2. listed adapters are loaded at server start (vLLM's --lora-modules) ----------------


def test_listed_adapters_are_preloaded_in_list_order():
    s = LoraSettings(
        max_loras=2,
        max_cpu_loras=3,
        adapters=(("a", 8), ("b", 8), ("c", 16), ("d", 8)),
    )
    st = LoraState(s)
    assert list(st.gpu) == ["c", "d"]  # the last max_loras listed
    assert list(st.cpu) == ["b", "c", "d"]  # the last max_cpu_loras listed
    assert (st.gpu_loads, st.cpu_loads, st.gpu_evictions, st.cpu_evictions) == (0, 0, 0, 0)
    assert st.load_time == 0 and st.preloaded == 4


def test_a_preloaded_adapter_costs_no_load_and_a_restart_preloads_again():
    s = LoraSettings(
        max_loras=1,
        max_cpu_loras=1,
        adapters=(("x", 8),),
        bytes_per_rank=1_000_000.0,
        disk_base_latency=3000,
    )
    base = _req(0, 0, "", out=1)
    ClusterSimulator([_instance(s)]).run([base])
    warm = _req(1, 0, "x", out=1, rank=8)
    inst = _instance(s)
    ClusterSimulator([inst]).run([warm])
    assert warm.first_token_time == base.first_token_time  # no load in the step
    lo = inst.lora
    assert (lo.gpu_loads, lo.cpu_loads, lo.load_time) == (0, 0, 0)
    cold = _req(2, 0, "y", out=1, rank=8)
    ClusterSimulator([inst2 := _instance(s)]).run([cold])
    assert inst2.lora.gpu_loads == 1 and list(inst2.lora.gpu) == ["y"]
    inst2.restart()  # a new server process: the listed adapter again, y gone
    assert list(inst2.lora.gpu) == ["x"] and list(inst2.lora.cpu) == ["x"]
    assert inst2.lora.preloaded == 2 and inst2.lora.gpu_loads == 1


def test_cli_listed_adapter_is_not_counted_as_a_load(tmp_path: Path):
    path = _trace(tmp_path, ["0.0,100,10,sql,8", "0.1,100,10,sql,8"])
    out = tmp_path / "r.json"
    r = _blis("run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath",
              path, "--lora-adapters", "sql:8", "--results-path", out)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lora = json.loads(out.read_text())["lora"]
    assert lora["adapter_loads"] == 0
    assert lora["instances"]["instance_0"]["preloaded_adapters"] == 1
    assert lora["instances"]["instance_0"]["load_time_ms"] == 0.0


# --- 3. a starved adapter stays in the results; records name their adapter ---------------


def test_a_starved_adapter_shows_with_zero_completed(tmp_path: Path):
    rows = [f"{i * 0.05:.3f},200,200,A," for i in range(200)] + ["0.5,200,20,B,"]
    path = _trace(tmp_path, sorted(rows, key=lambda r: float(r.split(",")[0])))
    out = tmp_path / "r.json"
    r = _blis("run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath",
              path, "--max-loras", 1, "--horizon", "8s", "--results-path", out)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = json.loads(out.read_text())
    b = doc["lora"]["adapters"]["B"]
    assert b["requests"] == 1 and b["completed_requests"] == 0
    assert b["still_queued"] + b["still_running"] == 1
    assert b["ttft_mean_ms"] == 0.0 and b["responses_per_sec"] == 0.0
    a = doc["lora"]["adapters"]["A"]
    assert a["requests"] == a["completed_requests"] + a["still_queued"] + a["still_running"]
    by_adapter = {rec["requestID"]: rec.get("adapter") for rec in doc["requests"]}
    assert set(by_adapter.values()) == {"A", "B"}


def test_records_carry_the_adapter_only_for_lora_requests(tmp_path: Path):
    from inference_sim import simulate

    path = _trace(tmp_path, ["0.0,100,10,x,8", "0.001,100,10,,", "0.002,100,10,x,8"])
    res = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(path),
                   max_loras=1)  # fmt: skip
    assert [r.get("adapter") for r in res.records] == ["x", None, "x"]
    assert res.summary["lora"]["adapters"]["(base)"]["requests"] == 1
    plain = simulate(model=MODEL, num_requests=5)
    assert not any("adapter" in r for r in plain.records)


# --- 4. base-model requests in the adapter-affinity scorer (llm-d) ------------------------


def test_adapter_affinity_scores_base_model_requests_as_llm_d():
    from inference_sim.policies.base import RouterState
    from inference_sim.policies.scorers import AdapterAffinityScorer

    sc = AdapterAffinityScorer(num_instances=3, max_loras=1)
    state = RouterState(None, 0, build=list, num_instances=3)
    base = _req(0, 0, "")
    assert sc.score(base, state) == [0.8, 0.8, 0.8]  # free slots everywhere
    sc.observe(_req(1, 0, "x"), 2)
    assert sc.score(base, state) == [0.8, 0.8, 0.0]  # instance 2's one slot is taken
    sc.observe(base, 0)  # the base model takes no slot
    assert sc.score(base, state) == [0.8, 0.8, 0.0]
    assert sc.recent == {2: {"x": None}}


# --- 5. --max-lora-rank takes vLLM's values only ----------------------------------------


@pytest.mark.parametrize("rank", [17, 2, 100])
def test_max_lora_rank_outside_vllms_values_exits_2(rank: int):
    line = _one_error(_blis("run", "--model", MODEL, "--num-requests", 5, "--max-loras", 1,
                            "--max-lora-rank", rank))  # fmt: skip
    assert line.startswith("Error: --max-lora-rank must be one of")
    assert "1, 8, 16, 32, 64, 128, 256, 320, 512" in line and f"got {rank}" in line


def test_every_vllm_max_lora_rank_is_accepted():
    assert MAX_LORA_RANKS == (1, 8, 16, 32, 64, 128, 256, 320, 512)
    for rank in MAX_LORA_RANKS:
        plan = resolve({"model": MODEL, "max_loras": 1, "max_lora_rank": rank})
        assert plan.engine.lora is not None and plan.engine.lora.max_lora_rank == rank
    with pytest.raises(ValueError, match="max_lora_rank must be one of"):
        LoraSettings(max_lora_rank=17)


# --- 6. lora: block errors name the file's field ----------------------------------------


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        ("{adapters: [{id: s, rank: abc}]}", "lora.adapters[0].rank must be a whole number"),
        ("{adapters: [{id: s, rank: 0}]}", "lora.adapters[0].rank must be a whole number"),
        ("{adapters: [{id: s, rank: true}]}", "lora.adapters[0].rank must be a whole number"),
        ("{adapters: [{id: s, name: t, rank: 8}]}", "lora.adapters[0]: give id or name"),
        ("{adapters: [{id: s, size: 8}]}", "lora.adapters[0].size is not a known key"),
        ("{adapters: [{id: s}, {name: s}]}", "lora.adapters[1].name: adapter 's' is listed twice"),
        ("{adapters: [{id: s, base_model: 3}]}", "lora.adapters[0].base_model must be a model"),
        ("{adapters: [{id: '(base)'}]}", "lora.adapters[0].id: adapter name '(base)' is reserved"),
        ("{max_lora_rank: 17, adapters: [{id: s}]}", "--max-lora-rank must be one of"),
    ],
)
def test_lora_block_errors_name_the_field(tmp_path: Path, block: str, needle: str):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {MODEL}\nlora: {block}\n", encoding="utf-8")
    line = _one_error(_blis("run", "--config", cfg, "--num-requests", 5))
    assert needle in line, line
    if "lora.adapters" in needle:
        assert f"--config {cfg}: lora.adapters[" in line and "--lora-adapters" not in line


def test_lora_block_name_alias_still_works(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {MODEL}\nlora: {{adapters: [{{name: s, rank: 8}}]}}\n")
    plan = resolve({"config": str(cfg), "num_requests": 5})
    assert plan.engine.lora is not None and plan.engine.lora.adapters == (("s", 8),)


# --- 7. the adapter name "(base)" is refused at input ------------------------------------


def test_the_base_model_key_is_refused_as_an_adapter_name(tmp_path: Path):
    line = _one_error(_blis("run", "--model", MODEL, "--num-requests", 5,
                            "--lora-adapters", "(base):8"))  # fmt: skip
    assert "'(base)' is reserved" in line and "--lora-adapters" in line
    spec = _spec(tmp_path, ("one", "(base)", 0), ("two", "x", 0))
    line = _one_error(_blis("run", "--model", MODEL, "--workload-spec", spec))
    assert "'(base)' is reserved" in line and "client 'one'" in line
    path = _trace(tmp_path, ["0.0,100,10,(base),8"])
    line = _one_error(_blis("run", "--model", MODEL, "--workload", "traces",
                            "--workload-traces-filepath", path, "--max-loras", 1))  # fmt: skip
    assert "'(base)' is reserved" in line and "request_0" in line


def test_adapter_rows_count_unservable_drops() -> None:
    """Requests dropped as unservable were counted in ``requests`` and nowhere else."""
    from inference_sim import simulate

    res = simulate(
        model=MODEL, num_requests=100, rate=10, total_kv_blocks=40, max_loras=1,
        lora_adapters=["a:8"], prompt_tokens=500, prompt_tokens_stdev=400,
        prompt_tokens_max=2000,
    )  # fmt: skip
    row = res.summary["lora"]["adapters"]["(base)"]
    assert row["dropped_unservable"] == res.summary["dropped_unservable"] > 0
    assert row["requests"] == row["completed_requests"] + row["dropped_unservable"] == 100
