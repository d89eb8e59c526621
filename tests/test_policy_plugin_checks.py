"""What a user's policy returns is checked where it is used (review 26).

A scheduler that removed a request from the wait queue lost it silently (exit 0, fewer
completions, no warning) and one that duplicated a request crashed deep in the engine;
an admission policy returning ``()`` crashed and ``("no", "x")`` admitted everything;
a routing decision's short, NaN or non-numeric ``scores`` were padded with 0, gave a
regret of 0 or crashed inside ``float()``. Each now stops the run with a one-line
``PolicyError`` naming the policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.analysis.trace import DecisionTrace, checked_scores
from inference_sim.cli.main import cli
from inference_sim.core.request import Request
from inference_sim.policies import RoutingDecision, RoutingSnapshot
from inference_sim.policies.base import PolicyError

MODEL = "meta-llama/llama-3.1-8b-instruct"

PLUGINS = '''
from collections import deque

import numpy as np

from inference_sim.policies import AdmissionDecision, RoutingDecision


class SchedDrops:
    def order(self, q, now):
        if len(q) > 1:
            q.pop()


class SchedDup:
    def order(self, q, now):
        if q:
            q.append(q[0])


class SchedSwapsInADuplicate:
    """Same length, but one request replaced by a copy of another."""

    def order(self, q, now):
        if len(q) > 1:
            q.pop()
            q.append(q[0])


class SchedRebuilds:
    """Clears and refills the deque, reversed: a legal reordering."""

    def order(self, q, now):
        items = list(q)
        q.clear()
        q.extend(reversed(items))


class AdmitEmpty:
    def admit(self, r, s):
        return ()


class AdmitStrTuple:
    def admit(self, r, s):
        return ("no", "x")


class AdmitIntTuple:
    def admit(self, r, s):
        return (1, "x")


class AdmitBadReason:
    def admit(self, r, s):
        return (True, 5)


class AdmitBadDecision:
    def admit(self, r, s):
        return AdmissionDecision("no", "x")


class AdmitNone:
    def admit(self, r, s):
        return None


class AdmitNumpyArray:
    def admit(self, r, s):
        return np.array([True, False])


class RejectOneTuple:
    def admit(self, r, s):
        return (False,)


class RejectNumpyTuple:
    def admit(self, r, s):
        return (np.bool_(False), "numpy says no")


class AdmitDecisionNumpy:
    def admit(self, r, s):
        return AdmissionDecision(np.bool_(r.index % 2 == 0))


class ShortScores:
    def route(self, r, s):
        return RoutingDecision(1, "x", [1.0])


class NanScores:
    def route(self, r, s):
        return RoutingDecision(0, "x", [float("nan"), 1.0])


class StrScores:
    def route(self, r, s):
        return RoutingDecision(0, "x", ["a", "b"])


class NumericStrScores:
    def route(self, r, s):
        return RoutingDecision(0, "x", ["1", "2"])


class NumpyScores:
    def route(self, r, s):
        return RoutingDecision(0, "x", np.array([0.0, 2.0]))


class DictScores:
    def route(self, r, s):
        return RoutingDecision(0, "x", {"instance_1": 3.0})
'''


@pytest.fixture
def plugin(tmp_path: Path) -> str:
    path = tmp_path / "plug.py"
    path.write_text(PLUGINS, encoding="utf-8")
    return str(path)


def _run(*args: Any) -> Any:
    return CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            MODEL,
            "--num-instances",
            "2",
            "--num-requests",
            "50",
            "--rate",
            "1000",
            *[str(a) for a in args],
        ],
    )


def _one_line_error(res: Any) -> str:
    """The run failed with exit code 1 and a single ``Error:`` line (no traceback)."""
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert "PolicyError" in errors[0]
    return errors[0]


# --- schedulers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "what"),
    [
        ("SchedDrops", "removed 1 request (request_"),
        ("SchedDup", "duplicated a request (request_"),
        ("SchedSwapsInADuplicate", "removed 1 request (request_"),
    ],
)
def test_a_scheduler_that_drops_or_duplicates_a_request_is_named(plugin, cls, what):
    line = _one_line_error(_run("--scheduler", f"{plugin}:{cls}"))
    assert f"scheduler {cls}'s order(wait_queue, now) {what}" in line
    if cls == "SchedSwapsInADuplicate":
        assert ") and duplicated a request (request_" in line
    assert "must only reorder the wait queue in place" in line


def test_a_scheduler_that_rebuilds_the_deque_in_a_new_order_is_fine(plugin):
    res = _run("--scheduler", f"{plugin}:SchedRebuilds", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["completed_requests"] == 50


def test_the_scheduler_check_reports_foreign_items_too():
    from collections import deque

    from inference_sim.policies.scheduler import _checked_order

    reqs = [Request(i, 0, [1, 2], [1]) for i in range(3)]
    hook = _checked_order(lambda q, now: q.append(None), "AddsNone")
    with pytest.raises(PolicyError, match=r"scheduler AddsNone's .* added 1 item not in the queue"):
        hook(deque(reqs), 7)
    ok = _checked_order(lambda q, now: q.rotate(1), "Rotates")
    q = deque(reqs)
    ok(q, 7)
    assert [r.index for r in q] == [2, 0, 1]


# --- admission -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "shown"),
    [
        ("AdmitEmpty", "()"),
        ("AdmitStrTuple", "('no', 'x')"),
        ("AdmitIntTuple", "(1, 'x')"),
        ("AdmitBadReason", "(True, 5)"),
        ("AdmitBadDecision", "AdmissionDecision(admitted='no', reason='x')"),
        ("AdmitNone", "None"),
        ("AdmitNumpyArray", "array([ True, False])"),
    ],
)
def test_an_admission_verdict_that_is_not_a_bool_is_named(plugin, cls, shown):
    line = _one_line_error(_run("--admission-policy", f"{plugin}:{cls}"))
    assert f"admission policy {cls} returned {shown}; expected True/False" in line


@pytest.mark.parametrize(
    ("cls", "admitted"),
    [("RejectOneTuple", 0), ("RejectNumpyTuple", 0), ("AdmitDecisionNumpy", 25)],
)
def test_tuples_with_a_bool_first_and_numpy_bools_are_verdicts(plugin, cls, admitted):
    res = _run("--admission-policy", f"{plugin}:{cls}", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rejected_requests"] == 50 - admitted


# --- routing scores --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "what"),
    [
        ("ShortScores", "returned 1 scores for 2 instances in its RoutingDecision"),
        ("NanScores", "returned NaN for instance 0 in its RoutingDecision's scores"),
        ("StrScores", "returned scores ['a', 'b']; scores are numbers"),
        ("NumericStrScores", "returned scores ['1', '2']; scores are numbers"),
    ],
)
def test_unusable_routing_scores_stop_a_traced_run(plugin, cls, what):
    line = _one_line_error(
        _run(
            "--routing-policy",
            f"{plugin}:{cls}",
            "--trace-level",
            "decisions",
            "--counterfactual-k",
            "2",
        )
    )
    assert f"routing policy {plugin}:{cls} {what}" in line  # the policy as the user named it


@pytest.mark.parametrize("cls", ["NumpyScores", "DictScores"])
def test_numpy_and_mapping_scores_give_the_regret(plugin, tmp_path, cls):
    out = tmp_path / "trace.jsonl"
    res = _run(
        "--routing-policy",
        f"{plugin}:{cls}",
        "--trace-level",
        "decisions",
        "--counterfactual-k",
        "2",
        "--trace-output",
        out,
    )
    assert res.exit_code == 0, res.output
    routing = [r for r in map(json.loads, out.read_text().splitlines()) if r["kind"] == "routing"]
    assert len(routing) == 50
    assert {r["regret"] for r in routing} == {{"NumpyScores": 2.0, "DictScores": 3.0}[cls]}


def test_the_trace_names_the_routing_policy():
    snaps = [RoutingSnapshot(f"instance_{i}", i) for i in range(3)]
    trace = DecisionTrace([s.id for s in snaps], 1, routing_policy="ShortScores")
    req = Request(0, 0, [1, 2], [1])
    with pytest.raises(PolicyError, match="routing policy ShortScores returned 2 scores for 3"):
        trace.record_routing(req, 0, RoutingDecision(0, "", [1.0, 2.0]), snaps)
    with pytest.raises(PolicyError, match="routing policy P returned NaN for instance 1"):
        checked_scores([0.0, float("nan"), 1.0], snaps, "P")
    with pytest.raises(PolicyError, match="routing policy P returned scores None"):
        checked_scores(None, snaps, "P")  # type: ignore[arg-type]
    assert checked_scores({"instance_2": 1}, snaps, "P") == [0.0, 0.0, 1.0]
