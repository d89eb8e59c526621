"""The golden reference runs, replayed on the reference's own workloads.

``tests/test_golden.py`` compares ten-seed means with the reference's single-seed figures
because our random numbers are not Go's. Here ``tests/gorand.py`` (a port of Go's
``math/rand``) regenerates, draw for draw, the workload the reference drew for each
golden case (``--workload distribution`` with the case's seed, rate, request count,
prefix and length parameters; shared/spec/workload.md section 3). It is written as a
reference-format CSV trace and replayed with ``blis run --workload traces`` and the
case's engine flags (``--max-model-len`` left out, as in test_golden.py), so the engine
sees exactly the reference's requests and the two simulators' figures can be compared
one to one:

* The regenerated token totals equal the reference's ``total_input_tokens`` and
  ``total_output_tokens`` (less one token per request, Q7) exactly, as does the request
  count: this checks the generator port over some 840,000 draws.
* Exact (to float rounding, relative 1e-12): the request count, token totals, duration,
  throughput, TTFT mean / p90 / p95 / p99, scheduling delay p99 and ITL p90 / p95 / p99.
* E2E mean / p90 / p95 / p99 and ITL mean are shifted into the reference's convention
  first (Q8: the reference adds one ITL sample per request, a copy of its completion
  step, and counts it in E2E), as test_golden.py does. Our records do not keep the last
  ITL sample, so the shift estimates it by the request's mean ITL; that estimate is the
  only error left and stays below 0.05 %, so these figures must agree within
  ``Q8_TOLERANCE`` = 0.1 %.
* The same extra samples are not in the ITL distribution we print; ITL percentiles are
  compared as printed and are exact except where those samples move one (per-case
  entries of ``TOLERANCE_OVERRIDES``). Case 3's ITL p99 is 1.43 % below the reference's:
  it lies in a gap of the sparse tail of steps that carry prefill chunks (about 2 % of
  the 12.5k samples, 20-45 ms), and four of the 300 extra samples (about 32.3 ms) push
  the reference's across the gap. Case 4's ITL p95 is 0.017 % below.
* Case 1 meets a documented difference (docs/differences.md: the reference starts a new
  step as soon as a request arrives during the step that empties the instance, overlapping
  it; we wait for that step to end, as vLLM does). An emulation of both rules on this
  workload puts six of the 300 requests (153 and 196-200) at different times. The figures
  those requests do not decide stay exact (counts, totals, duration, throughput, TTFT
  p95, ITL p90 / p95 / p99); TTFT mean / p90 / p99 and scheduling delay p99 must agree
  within 0.25 % (observed at most 0.12 %), E2E and ITL mean within 1 % (observed at most
  0.72 %, E2E p90).

The generator itself is checked first, against the test vectors of workload.md sections
2.2 and 3 (Go outputs) and Go's own regression outputs; those tests need no shared data.
The two distinct golden workloads' 1,600 normal draws take every path of the ziggurat
(47 wedge tests, 25 of them rejected, and one tail draw), so their exact token totals
check those paths too. The case replays take about two seconds in all.
"""

from __future__ import annotations

import itertools
import json
import math
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner

from gorand import FN, KN, MAX_TOKEN_ID, WN, GoRand, subsystem_seed
from inference_sim.cli.main import cli
from simhelpers import shared_dir

_SHARED = shared_dir()
needs_shared = pytest.mark.skipif(
    _SHARED is None,
    reason="shared reference data (reference-data/testdata/goldendataset.json) not found; "
    "set INFERENCE_SIM_SHARED",
)
CASES: list[dict[str, Any]] = (
    []
    if _SHARED is None
    else json.loads(
        (_SHARED / "reference-data" / "testdata" / "goldendataset.json").read_text("utf-8")
    )["tests"]
)


def _golden() -> types.ModuleType:
    """tests/test_golden.py, for its reference-convention helpers. Imported on use: it
    skips itself at import when the shared data is missing."""
    import test_golden

    return test_golden


# ---------------------------------------------------------------------------------------
# The generator port (no shared data needed)


def test_spec_vectors_seed_42():
    """workload.md section 2.2, ``NewSource(42)``, each list from a fresh source."""
    r = GoRand(42)
    assert [r.int63() for _ in range(3)] == [
        3440579354231278675,
        608747136543856411,
        5571782338101878760,
    ]
    r = GoRand(42)
    assert [r.float64() for _ in range(3)] == [
        0.3730283610466326,
        0.06600049679351791,
        0.604093851558642,
    ]
    r = GoRand(42)
    assert [r.intn(MAX_TOKEN_ID) for _ in range(5)] == [48305, 38987, 1668, 50750, 19423]
    assert GoRand(42).intn_list(MAX_TOKEN_ID, 5) == [48305, 38987, 1668, 50750, 19423]
    r = GoRand(42)
    assert [r.norm_float64() for _ in range(3)] == [
        1.5536305584564762,
        0.12525608682704692,
        -0.4943748127704828,
    ]


def test_spec_vector_workload_gen_stream():
    """The ``workload-gen`` stream of seed 42: seed XOR fnv1a64("workload-gen")."""
    assert subsystem_seed(42, "workload-gen") == 42 ^ 0x623E21A6896FC55F
    assert subsystem_seed(42, "workload") == 42
    r = GoRand(subsystem_seed(42, "workload-gen"))
    assert [r.int63() for _ in range(2)] == [8021973113318348621, 8992864799868832677]


def test_go_regression_outputs_seed_0():
    """Go's own golden outputs (src/math/rand/regress_test.go, ``NewSource(0)``, reseeded
    per method): the seed-0 replacement, ``Uint32``, ``Int31n`` over power-of-two and
    rejection-heavy bounds, and 20 ``NormFloat64`` draws."""
    r = GoRand(0)
    assert [r.uint32() for _ in range(5)] == [
        4059586549,
        1052117029,
        2817310706,
        233405013,
        1578775030,
    ]
    bounds = [1, 10, 32, 1 << 20, (1 << 20) + 1, 10**9, 1 << 30, (1 << 31) - 2, (1 << 31) - 1]
    r = GoRand(0)
    assert [r.int31n(bounds[k % len(bounds)]) for k in range(20)] == [
        *(0, 4, 25, 310570, 857611, 621654496, 413258767, 1407315077, 1926657288),
        *(0, 8, 27, 367019, 209005, 307989752, 544722126, 1663557311, 37539650),
        *(0, 4),
    ]
    r = GoRand(0)
    assert [r.norm_float64() for _ in range(20)] == [
        *(-0.28158587086436215, 0.570933095808067, -1.6920196326157044),
        *(0.1996229111693099, 1.9195199291234621, 0.8954838794918353),
        *(0.41457072128813166, -0.48700161491544713, -0.1684059662402393),
        *(0.37056410998929545, 1.0156889027029008, -0.5174422210625114),
        *(-0.5565834214413804, 0.778320596648391, -1.8970718197702225),
        *(0.5229525761688676, -1.5515595563231523, 0.0182029289376123),
        *(-0.6820951356608795, -0.5987943422687668),
    ]


def test_ziggurat_layers_are_well_formed():
    """The computed layers: 128 of them, the densities falling from 1 at the peak."""
    assert len(KN) == len(WN) == len(FN) == 128
    assert FN[0] == 1.0 and all(a > b for a, b in itertools.pairwise(FN))
    assert KN[1] == 0 and all(0 < k < 2**31 for k in KN[2:])


# ---------------------------------------------------------------------------------------
# The reference's distribution workload (workload.md section 3)


class TraceRow(NamedTuple):
    arrival_us: int
    input_tokens: list[int]
    output_tokens: list[int]


def go_round(x: float) -> int:
    """Go's ``math.Round``: half away from zero (``x - floor(x)`` is exact)."""
    mag = math.floor(abs(x))
    if abs(x) - mag >= 0.5:
        mag += 1
    return int(-mag if x < 0 else mag)


def gauss_len(rng: GoRand, mean: float, std: float, lo: int, hi: int) -> int:
    """A length ~ N(mean, std) clamped to [lo, hi] and rounded; no draw when lo == hi."""
    if lo == hi:
        return lo
    v = rng.norm_float64() * float(std) + float(mean)
    return go_round(min(max(v, float(lo)), float(hi)))


def distribution_workload(
    *,
    seed: int,
    rate: float,
    num_requests: int,
    prefix_tokens: int,
    prompt: tuple[float, float, int, int],
    output: tuple[float, float, int, int],
) -> list[TraceRow]:
    """The requests the reference's ``--workload distribution`` draws (no horizon):
    ``prompt`` and ``output`` are (mean, stdev, min, max)."""
    rng = GoRand(seed)  # the legacy "workload" stream is the seed itself
    prefix = rng.intn_list(MAX_TOKEN_ID, prefix_tokens)
    gap = int(1.0 / (rate / 1e6))  # constant spacing, truncated in float64
    rows = []
    for i in range(num_requests):
        p = gauss_len(rng, *prompt)
        inputs = prefix + rng.intn_list(MAX_TOKEN_ID, p)
        o = gauss_len(rng, *output)
        rows.append(TraceRow(i * gap, inputs, rng.intn_list(MAX_TOKEN_ID, o)))
    return rows


def case_workload(case: dict[str, Any]) -> list[TraceRow]:
    return distribution_workload(
        seed=case["seed"],
        rate=case["rate"],
        num_requests=case["num-requests"],
        prefix_tokens=case["prefix_tokens"],
        prompt=tuple(case[f"prompt_tokens{s}"] for s in ("", "_stdev", "_min", "_max")),
        output=tuple(case[f"output_tokens{s}"] for s in ("", "_stdev", "_min", "_max")),
    )


def test_spec_vector_distribution_workload():
    """workload.md section 3: defaults (seed 42, 512 / 256 / 2 / 7000 both ways)."""
    rows = distribution_workload(
        seed=42,
        rate=10,
        num_requests=3,
        prefix_tokens=0,
        prompt=(512, 256, 2, 7000),
        output=(512, 256, 2, 7000),
    )
    assert [(len(r.input_tokens), len(r.output_tokens)) for r in rows] == [
        (910, 191),
        (2, 607),
        (462, 310),
    ]
    assert [r.arrival_us for r in rows] == [0, 99999, 199998]


def seconds_text(us: int) -> str:
    """Decimal seconds that the reference's reader (``trunc(s * 1e6)``) maps back to
    ``us``: ``us / 1e6`` can land one µs short, so step to the next float up."""
    x = us / 1e6
    while int(x * 1e6) < us:
        x = math.nextafter(x, math.inf)
    assert int(x * 1e6) == us
    return repr(x)


def write_reference_trace(rows: list[TraceRow], path: Path) -> None:
    """The reference's CSV trace format (workload.md section 4.2)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("arrival_time,request_id,model,prefill_tokens,decode_tokens\n")
        for k, row in enumerate(rows):
            inputs = ",".join(map(str, row.input_tokens))
            outputs = ",".join(map(str, row.output_tokens))
            f.write(f'{seconds_text(row.arrival_us)},request_{k},m,"[{inputs}]","[{outputs}]"\n')


# ---------------------------------------------------------------------------------------
# Replays of the golden cases

_ENGINE_FLAGS = (
    "model",
    "hardware",
    "tp",
    "max-num-running-reqs",
    "max-num-scheduled-tokens",
    "total-kv-blocks",
    "block-size-in-tokens",
    "long-prefill-token-threshold",
)


def replay_args(case: dict[str, Any], trace: Path) -> list[str]:
    args = ["run", "--workload", "traces", "--workload-traces-filepath", str(trace)]
    for key in _ENGINE_FLAGS:
        args += [f"--{key}", str(case[key])]
    for key in ("alpha-coeffs", "beta-coeffs"):
        args += [f"--{key}", ",".join(repr(float(v)) for v in case[key])]
    return args


def case_id(index: int) -> str:
    return f"case{index}-{CASES[index]['model'].split('/')[-1]}"


def _workload_key(case: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("seed", "rate", "num-requests", "prefix_tokens")
    keys += tuple(
        f"{kind}_tokens{s}" for kind in ("prompt", "output") for s in ("", "_stdev", "_min", "_max")
    )
    return tuple(case[k] for k in keys)


@pytest.fixture(scope="module")
def workloads() -> Callable[[int], list[TraceRow]]:
    """Each case's regenerated workload (cases 1 and 3, 2 and 4 share theirs)."""
    cache: dict[tuple[Any, ...], list[TraceRow]] = {}

    def get(index: int) -> list[TraceRow]:
        key = _workload_key(CASES[index])
        if key not in cache:
            cache[key] = case_workload(CASES[index])
        return cache[key]

    return get


@pytest.fixture(scope="module")
def replays(
    workloads: Callable[[int], list[TraceRow]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], dict[str, Any]]:
    """Each case's results document, its workload replayed once per module."""
    folder = tmp_path_factory.mktemp("golden-exact")
    traces: dict[tuple[Any, ...], Path] = {}
    docs: dict[int, dict[str, Any]] = {}

    def get(index: int) -> dict[str, Any]:
        if index not in docs:
            case = CASES[index]
            key = _workload_key(case)
            if key not in traces:
                traces[key] = folder / f"workload{len(traces)}.csv"
                write_reference_trace(workloads(index), traces[key])
            out = folder / f"case{index}.json"
            result = CliRunner().invoke(
                cli, [*replay_args(case, traces[key]), "--results-path", str(out)]
            )
            assert result.exit_code == 0, (
                f"{case_id(index)}: exit {result.exit_code}\n{result.output}"
            )
            docs[index] = json.loads(out.read_text(encoding="utf-8"))
        return docs[index]

    return get


# ---------------------------------------------------------------------------------------
# What must match

EXACT = 0.0
Q8_TOLERANCE = 1e-3
_Q8_SHIFTED = ("e2e_mean_ms", "e2e_p90_ms", "e2e_p95_ms", "e2e_p99_ms", "itl_mean_ms")
_EXACT = (
    "completed_requests",
    "total_input_tokens",
    "total_output_tokens",
    "vllm_estimated_duration_s",
    "responses_per_sec",
    "tokens_per_sec",
    "ttft_mean_ms",
    "ttft_p90_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "scheduling_delay_p99_ms",
    "itl_p90_ms",
    "itl_p95_ms",
    "itl_p99_ms",
)
METRICS = _EXACT + _Q8_SHIFTED

# (case, metric) -> relative tolerance, where the module docstring gives a reason
TOLERANCE_OVERRIDES: dict[tuple[int, str], float] = {
    (3, "itl_p99_ms"): 0.02,  # extra samples push p99 across a gap in the tail: -1.43 %
    (4, "itl_p95_ms"): Q8_TOLERANCE,  # extra completion samples: -0.017 %
    # case 1: the reference overlaps a step with the step that empties the instance
    **{(1, m): 0.0025 for m in ("ttft_mean_ms", "ttft_p90_ms", "ttft_p99_ms")},
    (1, "scheduling_delay_p99_ms"): 0.0025,
    **{(1, m): 0.01 for m in _Q8_SHIFTED},
}


def tolerance(index: int, metric: str) -> float:
    default = Q8_TOLERANCE if metric in _Q8_SHIFTED else EXACT
    return TOLERANCE_OVERRIDES.get((index, metric), default)


def reference_figures(doc: dict[str, Any]) -> dict[str, float]:
    """Our results document's figures in the reference's conventions (Q7, Q8; the
    helpers of test_golden.py, plus E2E p90 / p95 and the throughputs)."""
    golden = _golden()
    figures = dict(golden.reference_convention(doc))
    e2e = [r["e2e_ms"] + golden.completion_extra_ms(r) for r in doc["requests"]]
    figures["e2e_p90_ms"] = golden.percentile(e2e, 90)
    figures["e2e_p95_ms"] = golden.percentile(e2e, 95)
    for key in (
        "completed_requests",
        "vllm_estimated_duration_s",
        "responses_per_sec",
        "ttft_p90_ms",
        "ttft_p95_ms",
        "scheduling_delay_p99_ms",
        "itl_p90_ms",
        "itl_p95_ms",
    ):
        figures[key] = doc[key]
    figures["tokens_per_sec"] = figures["total_output_tokens"] / doc["vllm_estimated_duration_s"]
    return figures


def agrees(ours: float, reference: float, tol: float) -> bool:
    if tol == EXACT:
        return math.isclose(ours, reference, rel_tol=1e-12, abs_tol=0.0)
    return abs(ours - reference) <= tol * abs(reference)


CASE_INDICES = list(range(len(CASES)))


@needs_shared
@pytest.mark.parametrize("index", CASE_INDICES, ids=case_id)
def test_regenerated_workload_has_reference_token_totals(workloads, index):
    case = CASES[index]
    rows = workloads(index)
    expected = case["metrics"]
    assert len(rows) == case["num-requests"] == expected["completed_requests"]
    assert sum(len(r.input_tokens) for r in rows) == expected["total_input_tokens"]
    # the reference does not count each request's first output token (Q7)
    assert sum(len(r.output_tokens) - 1 for r in rows) == expected["total_output_tokens"]


@needs_shared
@pytest.mark.parametrize(
    ("index", "metric"),
    [pytest.param(i, m, id=f"{case_id(i)}-{m}") for i in CASE_INDICES for m in METRICS],
)
def test_replay_matches_reference(replays, index, metric):
    doc = replays(index)
    assert doc["still_queued"] == doc["still_running"] == doc["dropped_unservable"] == 0
    ours = reference_figures(doc)[metric]
    reference = CASES[index]["metrics"][metric]
    tol = tolerance(index, metric)
    rel = (ours - reference) / reference
    assert agrees(ours, reference, tol), (
        f"{case_id(index)} {metric}: ours {ours!r} vs reference {reference!r} ({rel:+.4%}, "
        + ("exact expected)" if tol == EXACT else f"allowed ±{tol:.2%})")
    )
