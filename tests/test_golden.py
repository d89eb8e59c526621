"""The reference's golden dataset, replayed through ``blis run`` and compared statistically.

``goldendataset.json`` (shared reference data) holds five runs of the reference (BLIS at
7b59c196), each one CLI command and the metrics it printed for seed 42. Our random
numbers are not Go's (DECISIONS.md, "Random numbers"), so the same seed gives a different
workload draw. Each case is therefore run here for ten seeds (42..51) and the MEAN of our
figures is compared with the reference's single-seed figure:

* ``completed_requests`` must equal the reference's for every seed;
* within 5 %: ``ttft_mean_ms``, ``e2e_mean_ms``, ``itl_mean_ms``, ``total_input_tokens``,
  ``total_output_tokens``;
* within 10 %: ``ttft_p99_ms``, ``e2e_p99_ms``, ``itl_p99_ms``.

``--max-model-len`` is left out of the command: the reference ignores it, ours honours it.

Our numbers are first shifted into the reference's conventions (DECISIONS.md Q7, Q8):

* Q8 -- the reference adds one ITL sample when a request completes (a repeat of the final
  step, including trunc(alpha2)) and counts it in E2E; we do not. So for each completed
  request ``ref_E2E_i = our_E2E_i + extra_i`` where ``extra_i`` is the completion step's
  sample, i.e. our last ITL sample, approximated by the request's mean ITL (``itl_ms``)
  when ``num_decode_tokens > 1``; with a single output token there is no ITL sample and
  the completing step is the prefill step, ``extra_i = ttft_ms - scheduling_delay_ms``.
  The reference-convention E2E mean and p99 are recomputed from the per-request records
  (same percentile recipe as the reference). The reference ITL mean is
  ``(sum of our ITL samples + sum extra_i) / (our sample count + completed)``, where a
  request contributes ``e2e_ms - ttft_ms`` to our sum and ``num_decode_tokens - 1`` to our
  count. ITL p99 is compared as printed, without the extra samples (our records do not
  keep each request's last sample). They can move it: replaying the reference's exact
  workload (tests/test_golden_exact.py), case 3 has about 12.8k samples, 300 of them
  extra, and its p99 lies in a gap of the sparse tail of steps that carry prefill chunks
  (about 2 % of the samples, 20-45 ms); four extra samples of about 32.3 ms land above it
  and push the reference's p99 across the gap, so ours is 1.43 % lower. The 10 %
  tolerance covers that.
* Q7 -- we count every delivered token, the reference does not count the first one, so
  ``ref total_output_tokens = ours - completed``. Checked first: ours equals the sum of
  ``num_decode_tokens`` over the records.
* TTFT and input tokens have the same meaning on both sides.

Sampling noise of the reference's single draw: cases 1 and 3 (same seed, so the same
workload) draw prompts from N(2048, 1974) clamped to [2, 3500], whose mean is about 1935
tokens; the reference's one draw averaged 1819 tokens/request (545758 / 300), about 1.5
standard deviations of its own sampling spread low, so our ten-seed mean is 6.6 % above
it and TTFT, which grows with prompt length, follows (case 1: +5.1 %). For the (case,
metric) pairs listed in ``REFERENCE_DRAW_NOISE`` the bound is therefore the larger of the
nominal tolerance and three standard deviations of (one draw - a ten-seed mean), the
spread being estimated from our ten seeds. Every other pair uses the nominal tolerance.

Runs in process through click's ``CliRunner`` (about 10 s for the 50 runs).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from simhelpers import shared_dir

_SHARED = shared_dir()
if _SHARED is None:
    pytest.skip(
        "shared reference data (reference-data/testdata/goldendataset.json) not found; "
        "set INFERENCE_SIM_SHARED",
        allow_module_level=True,
    )
GOLDEN = _SHARED / "reference-data" / "testdata" / "goldendataset.json"
CASES: list[dict[str, Any]] = json.loads(GOLDEN.read_text(encoding="utf-8"))["tests"]
SEEDS = tuple(range(42, 52))

# (golden field, flag); max-model-len deliberately absent (see the module docstring)
_FLAGS = (
    ("model", "--model"),
    ("workload", "--workload"),
    ("rate", "--rate"),
    ("num-requests", "--num-requests"),
    ("prefix_tokens", "--prefix-tokens"),
    ("prompt_tokens", "--prompt-tokens"),
    ("prompt_tokens_stdev", "--prompt-tokens-stdev"),
    ("prompt_tokens_min", "--prompt-tokens-min"),
    ("prompt_tokens_max", "--prompt-tokens-max"),
    ("output_tokens", "--output-tokens"),
    ("output_tokens_stdev", "--output-tokens-stdev"),
    ("output_tokens_min", "--output-tokens-min"),
    ("output_tokens_max", "--output-tokens-max"),
    ("hardware", "--hardware"),
    ("tp", "--tp"),
    ("max-num-running-reqs", "--max-num-running-reqs"),
    ("max-num-scheduled-tokens", "--max-num-scheduled-tokens"),
    ("total-kv-blocks", "--total-kv-blocks"),
    ("block-size-in-tokens", "--block-size-in-tokens"),
    ("long-prefill-token-threshold", "--long-prefill-token-threshold"),
)

TOLERANCE = {
    "total_input_tokens": 0.05,
    "total_output_tokens": 0.05,
    "ttft_mean_ms": 0.05,
    "e2e_mean_ms": 0.05,
    "itl_mean_ms": 0.05,
    "ttft_p99_ms": 0.10,
    "e2e_p99_ms": 0.10,
    "itl_p99_ms": 0.10,
}

# (case index, metric) whose reference value is an atypical single draw (docstring)
REFERENCE_DRAW_NOISE = {
    (1, "total_input_tokens"),
    (1, "ttft_mean_ms"),
    (3, "total_input_tokens"),
}
NOISE_SIGMAS = 3.0


def case_id(index: int) -> str:
    return f"case{index}-{CASES[index]['model'].split('/')[-1]}"


def case_args(case: dict[str, Any]) -> list[str]:
    args = ["run"]
    for key, flag in _FLAGS:
        args += [flag, str(case[key])]
    for key in ("alpha-coeffs", "beta-coeffs"):
        args += [f"--{key}", ",".join(repr(float(v)) for v in case[key])]
    return args


def percentile(values: list[float], p: float) -> float:
    """The reference's percentile recipe (linear between closest ranks)."""
    v = sorted(values)
    rank = p / 100.0 * (len(v) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return v[lo] if lo == hi else v[lo] + (v[hi] - v[lo]) * (rank - lo)


def completion_extra_ms(rec: dict[str, Any]) -> float:
    """The reference's extra ITL sample at completion, estimated from our record."""
    if rec["num_decode_tokens"] > 1:
        return rec["itl_ms"]
    return rec["ttft_ms"] - rec["scheduling_delay_ms"]


def reference_convention(doc: dict[str, Any]) -> dict[str, float]:
    """Our results file's figures expressed in the reference's conventions."""
    recs = doc["requests"]
    completed = doc["completed_requests"]
    extras = [completion_extra_ms(r) for r in recs]
    e2e = [r["e2e_ms"] + x for r, x in zip(recs, extras, strict=True)]
    itl_sum = sum(r["e2e_ms"] - r["ttft_ms"] for r in recs) + sum(extras)
    itl_count = sum(r["num_decode_tokens"] - 1 for r in recs) + completed
    return {
        "total_input_tokens": doc["total_input_tokens"],
        "total_output_tokens": doc["total_output_tokens"] - completed,
        "ttft_mean_ms": doc["ttft_mean_ms"],
        "ttft_p99_ms": doc["ttft_p99_ms"],
        "e2e_mean_ms": sum(e2e) / len(e2e),
        "e2e_p99_ms": percentile(e2e, 99),
        "itl_mean_ms": itl_sum / itl_count,
        "itl_p99_ms": doc["itl_p99_ms"],
    }


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], list[dict]]:
    """Results documents of a case for every seed, run once per module."""
    cache: dict[int, list[dict[str, Any]]] = {}
    folder = tmp_path_factory.mktemp("golden")
    runner = CliRunner()

    def get(index: int) -> list[dict[str, Any]]:
        if index not in cache:
            docs = []
            for seed in SEEDS:
                path = folder / f"case{index}-seed{seed}.json"
                args = [*case_args(CASES[index]), "--seed", str(seed), "--results-path", str(path)]
                result = runner.invoke(cli, args)
                assert result.exit_code == 0, (
                    f"{case_id(index)} seed {seed}: exit {result.exit_code}\n{result.stderr}"
                )
                docs.append(json.loads(path.read_text(encoding="utf-8")))
            cache[index] = docs
        return cache[index]

    return get


CASE_INDICES = list(range(len(CASES)))


@pytest.mark.parametrize("index", CASE_INDICES, ids=case_id)
def test_completed_requests_match_reference(golden_runs, index):
    expected = CASES[index]["metrics"]["completed_requests"]
    got = [doc["completed_requests"] for doc in golden_runs(index)]
    assert got == [expected] * len(SEEDS)


@pytest.mark.parametrize("index", CASE_INDICES, ids=case_id)
def test_output_token_count_is_every_delivered_token(golden_runs, index):
    docs = golden_runs(index)
    for doc in docs:
        # everything finished, so every record is a completed request
        assert doc["still_queued"] == doc["still_running"] == doc["dropped_unservable"] == 0
        assert len(doc["requests"]) == doc["completed_requests"]
        assert doc["total_output_tokens"] == sum(r["num_decode_tokens"] for r in doc["requests"])
    # the seeds really draw different workloads, so a mean over them means something
    assert len({doc["total_input_tokens"] for doc in docs}) > 1


METRIC_PARAMS = [
    pytest.param(i, metric, id=f"{case_id(i)}-{metric}")
    for i in CASE_INDICES
    for metric in TOLERANCE
]


@pytest.mark.parametrize(("index", "metric"), METRIC_PARAMS)
def test_mean_over_seeds_close_to_reference(golden_runs, index, metric):
    reference = CASES[index]["metrics"][metric]
    values = [reference_convention(doc)[metric] for doc in golden_runs(index)]
    mean = statistics.fmean(values)
    allowed = TOLERANCE[metric] * abs(reference)
    if (index, metric) in REFERENCE_DRAW_NOISE:
        spread = statistics.stdev(values) * math.sqrt(1 + 1 / len(values))
        allowed = max(allowed, NOISE_SIGMAS * spread)
    rel = (mean - reference) / reference
    assert abs(mean - reference) <= allowed, (
        f"{case_id(index)} {metric}: mean of ours {mean:.6g} vs reference {reference:.6g} "
        f"({rel:+.2%}, allowed ±{allowed / abs(reference):.1%}); per seed: "
        + ", ".join(f"{v:.6g}" for v in values)
    )
