"""User plug-ins: every policy kind by ``module:Class``, ``file.py:Class``, entry point or
``register``; clear one-line errors; the documented example beats round-robin."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from inference_sim import simulate
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.config import ConfigError, resolve
from inference_sim.config.policies import build_policies
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.policies import ROUTING, PolicyError
from inference_sim.policies.registry import load_object
from simhelpers import make_request

MODEL = "meta-llama/llama-3.1-8b-instruct"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

PLUGIN_SOURCE = textwrap.dedent(
    """
    from inference_sim.policies import RoutingDecision

    class LastInstance:
        def __init__(self, num_instances, block_size=16):
            self.n = num_instances
            self.block_size = block_size

        def route(self, request, state):
            return RoutingDecision(self.n - 1, "last")

    class ById:
        def route(self, request, state):
            return "instance_1"

    class EveryOther:
        def __init__(self):
            self.k = 0

        def admit(self, request, state):
            self.k += 1
            return self.k % 2 == 1  # a bare bool

    class Longest:
        def score(self, request, state):
            return [s.index / max(1, len(state) - 1) for s in state.snapshots]

    class ByLength:
        def order(self, wait_queue, now):
            items = sorted(wait_queue, key=lambda r: -r.num_prompt_tokens)
            wait_queue.clear()
            wait_queue.extend(items)

    class Newest:
        def priority(self, request, now):
            return float(request.arrival_time)

    class NoMethods:
        pass

    class Broken:
        def __init__(self, needed):
            pass

        def route(self, request, state):
            return 0

    class Nowhere:
        def route(self, request, state):
            return 7

    class NaNScore:
        def score(self, request, state):
            return [float("nan")] * len(state.snapshots)

    class OneScore:
        def score(self, request, state):
            return [1.0]

    class WordScore:
        def score(self, request, state):
            return ["high"] * len(state.snapshots)

    class Yes:
        def admit(self, request, state):
            return "yes"

    class NumpyVerdicts:
        def admit(self, request, state):
            import numpy as np

            return np.float32(request.num_prompt_tokens) > np.float32(0)  # a numpy bool

        def priority(self, request, now):
            import numpy as np

            return np.float32(request.arrival_time)

    class NaNPriority:
        def priority(self, request, now):
            return float("nan")
    """
)


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> str:
    """A module ``my_sim_plugins`` importable by name (and as a file)."""
    (tmp_path / "my_sim_plugins.py").write_text(PLUGIN_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_sim_plugins"
    sys.modules.pop("my_sim_plugins", None)


def small(**options):
    base = {"model": MODEL, "num_requests": 20, "rate": 50, "num_instances": 3}
    return simulate(**{**base, **options})


def handled(res) -> list[int]:
    return [s["completed_requests"] for s in res.instance_summaries]


def test_routing_plugin_by_module_path_gets_context(plugin):
    res = small(routing_policy=f"{plugin}:LastInstance")
    assert handled(res) == [0, 0, 20]


def test_routing_plugin_by_file_path_returning_an_id(plugin, tmp_path):
    res = small(routing_policy=f"{tmp_path / 'my_sim_plugins.py'}:ById")
    assert handled(res) == [0, 20, 0]


def test_admission_plugin_returning_bools(plugin):
    res = small(admission_policy=f"{plugin}:EveryOther")
    assert res.summary["rejected_requests"] == 10
    assert res.summary["completed_requests"] == 10


def test_scorer_plugin_in_weighted_routing(plugin):
    res = small(routing_policy="weighted", routing_scorers=f"{plugin}:Longest:1")
    assert handled(res) == [0, 0, 20]


def test_scheduler_and_priority_plugins(plugin):
    res = small(
        scheduler=f"{plugin}:ByLength",
        priority_policy=f"{plugin}:Newest",
        num_instances=1,
        max_num_running_reqs=1,
    )
    assert res.summary["completed_requests"] == 20
    # One request runs at a time, so the plug-in scheduler alone decides who starts next:
    # whenever a request starts, nobody still waiting then has a longer prompt.
    reqs = [
        (r["arrived_at"], r["arrived_at"] + r["scheduling_delay_ms"] / 1e3, r["num_prefill_tokens"])
        for r in res.records
    ]
    overtaken = 0
    for arrived, started, length in reqs:
        waiting = [o for o in reqs if o[0] <= started and o[1] > started]
        assert all(o[2] <= length for o in waiting), (started, length, waiting)
        overtaken += sum(1 for o in waiting if o[0] < arrived)
    assert overtaken > 0  # the order is not first-come-first-served


@pytest.mark.parametrize(
    ("option", "name", "needles"),
    [
        (
            "routing_policy",
            "{p}:NoMethods",
            ["--routing-policy", "NoMethods does not implement", "route(request, state)"],
        ),
        ("admission_policy", "{p}:LastInstance", ["--admission-policy", "admit(request, state)"]),
        ("scheduler", "{p}:Newest", ["--scheduler", "order(wait_queue, now)"]),
        ("priority_policy", "{p}:ByLength", ["--priority-policy", "priority(request, now)"]),
        ("routing_policy", "{p}:Missing", ["has no attribute 'Missing'"]),
        ("routing_policy", "no_such_module_xyz:Thing", ["cannot import 'no_such_module_xyz'"]),
        ("routing_policy", "/no/such/file.py:Thing", ["no such file"]),
        ("routing_policy", ":Thing", ["expected module.path:ClassName"]),
    ],
)
def test_plugin_errors_are_one_line(plugin, option, name, needles):
    with pytest.raises(ConfigError) as err:
        resolve({"model": MODEL, option: name.format(p=plugin)})
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_plugin_module_that_fails_to_import(tmp_path):
    bad = tmp_path / "exploding_plugin.py"
    bad.write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"loading .*exploding_plugin\.py.* failed: RuntimeError: boom"
    ):
        resolve({"model": MODEL, "routing_policy": f"{bad}:X"})


def test_plugin_constructor_failure_is_bad_input(plugin):
    plan = resolve({"model": MODEL, "routing_policy": f"{plugin}:Broken"})
    with pytest.raises(ConfigError, match="cannot construct it"):
        build_policies(plan.options, 2, 16)


def test_route_to_a_missing_instance_is_an_error(plugin):
    policy = load_object(f"{plugin}:Nowhere")()
    cfg = EngineConfig(
        num_gpu_blocks=1000, block_size=16, max_num_seqs=8, max_num_batched_tokens=512
    )
    insts = [FastInstance(i, cfg, BlackboxLatencyModel((0, 0, 0), (100, 1, 1))) for i in range(2)]
    sim = ClusterSimulator(insts, routing=policy)
    with pytest.raises(PolicyError, match=r"chose instance 7; valid: 0\.\.1"):
        sim.run([make_request(0, 0, 16, 2)])


def test_entry_point_plugins(plugin, monkeypatch):
    ep = metadata.EntryPoint("last-one", f"{plugin}:LastInstance", "inference_sim.routing")
    real = metadata.entry_points

    def fake(**kw):
        return [ep] if kw.get("group") == "inference_sim.routing" else real(**kw)

    monkeypatch.setattr("inference_sim.policies.registry.metadata.entry_points", fake)
    assert handled(small(routing_policy="last-one")) == [0, 0, 20]


def test_register_a_name_at_runtime(plugin):
    cls = load_object(f"{plugin}:ById")
    ROUTING.register("by-id-test", cls)
    try:
        assert "by-id-test" in ROUTING.names()
        assert handled(small(routing_policy="by-id-test")) == [0, 20, 0]
    finally:
        ROUTING._factories.pop("by-id-test")


def test_registered_names_must_not_look_like_plugins():
    with pytest.raises(ValueError):
        ROUTING.register("a:b", object)


# --- the documented example ----------------------------------------------------------------


def test_example_custom_policy_beats_round_robin_on_p99_ttft(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import compare_routing

    results = compare_routing.compare(num_requests=300)
    rr = results["round-robin"]["ttft_p99_ms"]
    custom = results["LeastWork (custom)"]["ttft_p99_ms"]
    assert custom < 0.75 * rr, results
    sys.modules.pop("compare_routing", None)


def test_example_scorer_plugin_runs():
    res = small(
        routing_policy="weighted",
        routing_scorers=f"{EXAMPLES / 'custom_routing.py'}:FreeBlocksScorer:1,queue-depth:1",
    )
    assert res.summary["completed_requests"] == 20


def test_a_ready_made_policy_object_can_be_named(plugin):
    sys.modules[plugin].SHARED = load_object(f"{plugin}:ById")()
    assert handled(small(routing_policy=f"{plugin}:SHARED")) == [0, 20, 0]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"routing_policy": "weighted", "routing_scorers": "{m}:NaNScore:1"},
         "returned NaN for instance 0"),
        ({"routing_policy": "weighted", "routing_scorers": "{m}:OneScore:1"},
         "returned 1 scores for 3 instances"),
        ({"routing_policy": "weighted", "routing_scorers": "{m}:WordScore:1"},
         r"returned \['high', 'high', 'high'\]; scores are numbers"),
        ({"admission_policy": "{m}:Yes"}, "returned 'yes'; expected True/False"),
        ({"priority_policy": "{m}:NaNPriority", "scheduler": "priority-fcfs"},
         "returned nan for request"),
    ],
)  # fmt: skip
def test_a_plugin_returning_what_cannot_be_used_is_named(plugin, options, needle):
    """NaN, short or non-numeric scores and non-boolean verdicts used to be absorbed
    (every request to instance 0, 'yes' read as admit, NaN priorities sorting anywhere)."""
    with pytest.raises(Exception, match=needle):
        small(**{k: v.format(m=plugin) for k, v in options.items()})


def test_numpy_numbers_are_numbers(plugin):
    """A plug-in computing with numpy returns numpy bools and floats: they are accepted."""
    res = small(
        admission_policy=f"{plugin}:NumpyVerdicts",
        priority_policy=f"{plugin}:NumpyVerdicts",
        scheduler="priority-fcfs",
    )
    assert res.summary["completed_requests"] == 20


def test_file_plugins_are_found_relative_to_the_config_that_names_them(tmp_path, monkeypatch):
    """A run config naming `custom_routing.py:LeastWork` (next to it) runs from any
    folder, and its results record the plug-in's absolute path, so a replay
    (`--config results.json`) from another folder finds it too."""
    import json
    import shutil
    from pathlib import Path

    from click.testing import CliRunner

    from inference_sim.cli.main import cli
    from inference_sim.core.plugins import rebase_plugin_files

    here = tmp_path / "cfg"
    here.mkdir()
    shutil.copy(Path(__file__).parents[1] / "examples" / "custom_routing.py", here)
    results = here / "r.json"
    (here / "run.yaml").write_text(
        "model: meta-llama/llama-3.1-8b-instruct\nnum_requests: 10\nnum_instances: 2\n"
        "routing_policy: custom_routing.py:LeastWork\n"
        f"results_path: {results}\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = CliRunner().invoke(cli, ["run", "--config", str(here / "run.yaml"), "-q"])
    assert res.exit_code == 0, res.output
    recorded = json.loads(results.read_text(encoding="utf-8"))["config"]["routing_policy"]
    assert recorded == f"{here / 'custom_routing.py'}:LeastWork"
    replay = CliRunner().invoke(
        cli, ["run", "--config", str(results), "--results-path", str(tmp_path / "r2.json")]
    )
    assert replay.exit_code == 0, replay.output
    assert rebase_plugin_files("a.py:S:2,queue-depth:1, /x/b.py:T:1", "/base") == (
        "/base/a.py:S:2,queue-depth:1, /x/b.py:T:1"
    )
    assert rebase_plugin_files("least-loaded", "/base") == "least-loaded"


def test_sweep_file_plugins_are_relative_to_the_sweep_file(tmp_path):
    from inference_sim.sweep.spec import parse_sweep

    doc = {
        "base": {"model": "meta-llama/llama-3.1-8b-instruct", "routing_policy": "p.py:A"},
        "grid": {"routing_scorers": ["s.py:S:2,queue-depth:1", "queue-depth:1"]},
        "cases": [{"latency_model": "sub/m.py:M"}],
    }
    spec = parse_sweep(doc, "sweep.yaml", folder=str(tmp_path))
    assert spec.base["routing_policy"] == f"{tmp_path / 'p.py'}:A"
    assert spec.grid["routing_scorers"] == [
        f"{tmp_path / 's.py'}:S:2,queue-depth:1",
        "queue-depth:1",
    ]
    assert spec.cases[0]["latency_model"] == f"{tmp_path / 'sub' / 'm.py'}:M"
