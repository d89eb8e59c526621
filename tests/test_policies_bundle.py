"""The ``--policy-config`` bundle: schema, precedence over flags, errors naming key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_sim.config import ConfigError, resolve
from inference_sim.config.policies import build_policies, load_bundle
from inference_sim.policies import AlwaysAdmit, TokenBucket, Weighted

MODEL = "meta-llama/llama-3.1-8b-instruct"

FULL = """\
admission:
  policy: token-bucket
  token_bucket_capacity: 5000
  token_bucket_refill_rate: 800
routing:
  policy: weighted
  scorers:
    - name: queue-depth
      weight: 2
    - name: load-balance
      weight: 1.5
priority:
  policy: slo-based
scheduler: priority-fcfs
"""


def write(tmp_path: Path, text: str, name: str = "bundle.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def plan(**options):
    return resolve({"model": MODEL, **options})


def test_bundle_values_apply_when_flags_are_not_given(tmp_path):
    o = plan(policy_config=write(tmp_path, FULL)).options
    assert o["admission_policy"] == "token-bucket"
    assert (o["token_bucket_capacity"], o["token_bucket_refill_rate"]) == (5000.0, 800.0)
    assert o["routing_policy"] == "weighted"
    assert o["routing_scorers"] == "queue-depth:2.0,load-balance:1.5"
    assert (o["priority_policy"], o["scheduler"]) == ("slo-based", "priority-fcfs")
    ps = build_policies(o, 2, 16)
    assert isinstance(ps.admission, TokenBucket) and ps.admission.capacity == 5000.0
    assert isinstance(ps.routing, Weighted)
    assert ps.routing.names == ["queue-depth", "load-balance"]
    assert ps.priority_policy == "slo-based"
    assert len(ps.wait_queue_hooks) == 2 and all(ps.wait_queue_hooks)


def test_explicit_flags_win_even_with_default_values(tmp_path):
    o = plan(
        policy_config=write(tmp_path, FULL),
        admission_policy="always-admit",  # equal to the default, still explicit
        scheduler="fcfs",
        token_bucket_capacity=10000.0,
    ).options
    assert o["admission_policy"] == "always-admit"
    assert o["scheduler"] == "fcfs"
    assert o["token_bucket_capacity"] == 10000.0
    assert o["token_bucket_refill_rate"] == 800.0  # not given: the bundle's
    assert o["routing_policy"] == "weighted"
    ps = build_policies(o, 1, 16)
    assert isinstance(ps.admission, AlwaysAdmit)
    assert ps.wait_queue_hooks == [None]


def test_routing_scorers_flag_beats_bundle_scorers(tmp_path):
    o = plan(policy_config=write(tmp_path, FULL), routing_scorers="kv-utilization:1").options
    assert o["routing_scorers"] == "kv-utilization:1"


def test_bundle_scorers_ignored_unless_routing_is_weighted(tmp_path):
    o = plan(policy_config=write(tmp_path, FULL), routing_policy="least-loaded").options
    assert o["routing_scorers"] == ""


def test_empty_sections_and_nulls_are_absent(tmp_path):
    text = "admission:\nrouting:\n  policy:\npriority:\n  policy: ''\nscheduler: sjf\n"
    o = plan(policy_config=write(tmp_path, text)).options
    assert o["admission_policy"] == "always-admit"
    assert o["routing_policy"] == "round-robin"
    assert o["priority_policy"] == "constant"
    assert o["scheduler"] == "sjf"


def test_defaults_bundle_loads_with_lines(tmp_path):
    defaults = "admission:\n  policy: always-admit\nrouting:\n  policy: round-robin\n"
    defaults += "priority:\n  policy: constant\nscheduler: fcfs\n"
    b = load_bundle(write(tmp_path, defaults))
    assert b.values == {
        "admission_policy": "always-admit",
        "routing_policy": "round-robin",
        "priority_policy": "constant",
        "scheduler": "fcfs",
    }
    assert b.lines["scheduler"] == 7


def test_our_example_bundle_is_valid():
    path = Path(__file__).resolve().parents[1] / "examples" / "policy-bundle.yaml"
    o = plan(policy_config=str(path)).options
    assert o["routing_policy"] == "weighted"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "routing:\n  polcy: weighted\n",
            ["line 2", "unknown key 'polcy' in routing", "policy, scorers"],
        ),
        ("admision:\n  policy: x\n", ["line 1", "unknown key 'admision'", "admission, routing"]),
        (
            "scheduler: lifo\n",
            ["line 1", "scheduler", "unknown scheduler 'lifo'", "fcfs, priority-fcfs"],
        ),
        (
            "admission:\n  policy: always-admit\n\nrouting:\n  policy: fastest\n",
            [
                "line 5",
                "routing.policy",
                "unknown routing policy 'fastest'",
                "always-busiest, least-loaded",
            ],
        ),
        ("priority:\n  policy: urgent\n", ["line 2", "priority.policy", "inverted-slo, slo-based"]),
        (
            "admission:\n  token_bucket_capacity: -1\n",
            ["line 2", "admission.token_bucket_capacity must be non-negative, got -1.0"],
        ),
        (
            "admission:\n  token_bucket_refill_rate: .inf\n",
            ["line 2", "token_bucket_refill_rate must be a finite number"],
        ),
        ("admission:\n  token_bucket_capacity: lots\n", ["line 2", "must be a number, got 'lots'"]),
        (
            "routing:\n  scorers:\n    - name: queue-depth\n      weight: 1\n"
            "    - name: bogus\n      weight: 1\n",
            ["line 5", "routing.scorers[1]", "unknown routing scorer 'bogus'", "kv-utilization"],
        ),
        (
            "routing:\n  scorers:\n    - name: queue-depth\n",
            ["line 3", "routing.scorers[0] needs a weight"],
        ),
        (
            "routing:\n  scorers:\n    - name: queue-depth\n      weight: 0\n",
            ["line 3", "routing.scorers[0]", "weight must be a finite positive number, got 0.0"],
        ),
        (
            "routing:\n  scorers:\n    - name: queue-depth\n      weight: 1\n"
            "    - name: queue-depth\n      weight: 2\n",
            ["line 5", "duplicate scorer 'queue-depth'"],
        ),
        (
            "routing:\n  scorers:\n    - name: queue-depth\n      wieght: 1\n",
            ["line 4", "unknown key 'wieght'"],
        ),
        ("routing:\n  scorers: queue-depth\n", ["line 2", "routing.scorers must be a list"]),
        ("routing: weighted\n", ["line 1", "routing must be a mapping"]),
        ("- a\n- b\n", ["line 1", "the document must be a mapping"]),
        ("routing:\n  policy: [weighted\n", ["line 3", "invalid YAML"]),
        ("routing:\n  policy: a\n  policy: b\n", ["line 3", "key 'policy' given twice"]),
        ("", ["the file is empty"]),
    ],
)
def test_malformed_bundles_name_the_key_and_line(tmp_path, text, needles):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        plan(policy_config=path)
    msg = str(err.value)
    assert msg.startswith(f"--policy-config {path}"), msg
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_bundle_file(tmp_path):
    with pytest.raises(ConfigError, match=r"--policy-config .*missing\.yaml: cannot read"):
        plan(policy_config=str(tmp_path / "missing.yaml"))


def test_zero_token_bucket_value_passes_the_bundle_but_fails_for_token_bucket(tmp_path):
    text = "admission:\n  token_bucket_capacity: 0\n"
    assert plan(policy_config=write(tmp_path, text)).options["token_bucket_capacity"] == 0.0
    text = "admission:\n  policy: token-bucket\n  token_bucket_capacity: 0\n"
    with pytest.raises(ConfigError) as err:
        plan(policy_config=write(tmp_path, text))
    assert "--token-bucket-capacity must be a finite number > 0, got 0.0" in str(err.value)
    assert "line 3" in str(err.value)


def test_validation_order_admission_name_before_routing_name(tmp_path):
    text = "admission:\n  policy: nope\nrouting:\n  policy: nope\n"
    with pytest.raises(ConfigError, match="unknown admission policy"):
        plan(policy_config=write(tmp_path, text))


def test_plugin_names_work_in_bundles(tmp_path):
    (tmp_path / "my_bundle_policies.py").write_text(
        "class First:\n    def route(self, request, state):\n        return 0\n", encoding="utf-8"
    )
    text = f"routing:\n  policy: {tmp_path / 'my_bundle_policies.py'}:First\n"
    o = plan(policy_config=write(tmp_path, text)).options
    ps = build_policies(o, 2, 16)
    assert type(ps.routing).__name__ == "First"
