"""Legacy distribution generator: spacing, lengths, prefix, determinism, validation."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_sim.workload import (
    MAX_TOKEN_ID,
    DistributionParams,
    LengthDistribution,
    WorkloadError,
    generate_distribution,
    inter_arrival_ticks,
    round_half_away_from_zero,
    validate_distribution,
)

NO_HORIZON = 2**63 - 1
DEFAULT_LAW = LengthDistribution(mean=512, stdev=256, min=2, max=7000)


def params(
    prefix: int = 0,
    prompt: LengthDistribution = DEFAULT_LAW,
    output: LengthDistribution = DEFAULT_LAW,
) -> DistributionParams:
    return DistributionParams(prefix_tokens=prefix, prompt=prompt, output=output)


def generate(
    p: DistributionParams | None = None,
    *,
    rate: float = 10.0,
    num_requests: int = 50,
    horizon: int = NO_HORIZON,
    seed: int = 42,
):
    return generate_distribution(
        p or params(),
        rate=rate,
        num_requests=num_requests,
        horizon=horizon,
        rng=np.random.default_rng(seed),
    )


# --- arrivals ---------------------------------------------------------------------------


def test_rate_10_spacing_is_truncated_to_99999():
    reqs = generate(num_requests=300, rate=10.0)
    assert len(reqs) == 300
    assert [r.arrival_time for r in reqs[:3]] == [0, 99999, 199998]
    assert reqs[-1].arrival_time == 299 * 99999 == 29_899_701
    assert [r.index for r in reqs] == list(range(300))
    assert reqs[5].request_id == "request_5"


@pytest.mark.parametrize(
    ("rate", "gap"),
    [
        (10, 99999),
        (5, 199999),
        (20, 49999),
        (40, 24999),
        (3, 333333),
        (60, 16666),
        (1, 1_000_000),
        (2, 500_000),
        (25, 40_000),
        (100, 10_000),
        (5000, 200),
    ],
)
def test_inter_arrival_matches_reference_truncation(rate, gap):
    assert inter_arrival_ticks(rate) == gap
    reqs = generate(rate=rate, num_requests=4)
    assert [r.arrival_time for r in reqs] == [0, gap, 2 * gap, 3 * gap]


def test_rate_above_one_per_tick_puts_everything_at_zero():
    reqs = generate(rate=2e6, num_requests=5)
    assert [r.arrival_time for r in reqs] == [0] * 5


def test_horizon_stops_at_first_arrival_at_or_beyond_it():
    # arrivals 0, 99999, 199998, 299997 ...; a horizon equal to an arrival excludes it
    assert len(generate(num_requests=100, horizon=299997)) == 3
    assert len(generate(num_requests=100, horizon=299998)) == 4
    assert len(generate(num_requests=100, horizon=1)) == 1
    assert generate(num_requests=100, horizon=0) == []
    assert len(generate(num_requests=2, horizon=10**9)) == 2


def test_zero_requests_is_empty():
    assert generate(num_requests=0) == []


# --- lengths ----------------------------------------------------------------------------


def test_lengths_stay_within_bounds():
    prompt = LengthDistribution(mean=50, stdev=400, min=10, max=60)
    output = LengthDistribution(mean=5, stdev=300, min=0, max=8)
    reqs = generate(params(prompt=prompt, output=output), num_requests=500)
    assert all(10 <= r.num_prompt_tokens <= 60 for r in reqs)
    assert all(0 <= r.num_output_tokens <= 8 for r in reqs)
    # a stdev this wide must hit both clamps, including a zero-length output
    assert {r.num_prompt_tokens for r in reqs} >= {10, 60}
    assert {r.num_output_tokens for r in reqs} >= {0, 8}


def test_degenerate_range_gives_exact_length():
    fixed = LengthDistribution(mean=7, stdev=3, min=7, max=7)
    reqs = generate(params(prompt=fixed, output=LengthDistribution(0, 0, 0, 0)), num_requests=20)
    assert all(r.num_prompt_tokens == 7 and r.num_output_tokens == 0 for r in reqs)
    assert all(r.output_tokens.tolist() == [] for r in reqs)


def test_sample_mean_close_to_mean_for_wide_range():
    law = LengthDistribution(mean=512, stdev=128, min=1, max=100_000)
    reqs = generate(params(prompt=law, output=LengthDistribution(1, 0, 1, 1)), num_requests=4000)
    mean = sum(r.num_prompt_tokens for r in reqs) / len(reqs)
    assert abs(mean - 512) < 4 * 128 / math.sqrt(len(reqs)) + 0.5
    sd = float(np.std([r.num_prompt_tokens for r in reqs]))
    assert 115 < sd < 141


def test_token_ids_in_vocabulary_range():
    reqs = generate(params(prefix=30), num_requests=30)
    ids = [t for r in reqs for t in (*r.input_tokens.tolist(), *r.output_tokens.tolist())]
    assert all(type(t) is int for t in ids)
    assert min(ids) >= 0 and max(ids) < MAX_TOKEN_ID


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.0, 0),
        (0.5, 1),
        (1.5, 2),
        (2.5, 3),
        (2.4999, 2),
        (-0.5, -1),
        (-2.5, -3),
        (-2.4, -2),
        (0.49999999999999994, 0),
        (7.0, 7),
    ],
)
def test_round_half_away_from_zero(x, expected):
    assert round_half_away_from_zero(x) == expected


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_round_half_away_matches_decimal(x):
    expected = int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert round_half_away_from_zero(x) == expected


# --- shared prefix ------------------------------------------------------------------------


def test_shared_prefix_is_identical_across_requests():
    reqs = generate(params(prefix=64), num_requests=40)
    prefix = reqs[0].input_tokens[:64].tolist()
    assert all(r.input_tokens[:64].tolist() == prefix for r in reqs)
    assert all(r.num_prompt_tokens >= 64 + 2 for r in reqs)
    # each request has its own list (the engine must never see aliasing between requests)
    assert reqs[0].input_tokens is not reqs[1].input_tokens
    # the random suffixes differ
    assert reqs[0].input_tokens[64:].tolist() != reqs[1].input_tokens[64:].tolist()


def test_no_prefix_when_zero():
    prompt = LengthDistribution(mean=3, stdev=0, min=3, max=3)
    reqs = generate(params(prompt=prompt), num_requests=10)
    assert all(r.num_prompt_tokens == 3 for r in reqs)


# --- determinism --------------------------------------------------------------------------


def _fingerprint(reqs):
    return [
        (r.index, r.arrival_time, r.input_tokens.tolist(), r.output_tokens.tolist()) for r in reqs
    ]


def test_same_seed_same_requests():
    p = params(prefix=16)
    assert _fingerprint(generate(p, num_requests=100, seed=7)) == _fingerprint(
        generate(p, num_requests=100, seed=7)
    )


def test_different_seed_different_requests():
    p = params(prefix=16)
    a = _fingerprint(generate(p, num_requests=100, seed=7))
    b = _fingerprint(generate(p, num_requests=100, seed=8))
    assert a != b
    assert [x[1] for x in a] == [x[1] for x in b]  # arrivals never depend on the seed


def test_bulk_chunking_does_not_change_results(monkeypatch):
    import inference_sim.workload.distribution as dist

    p = params(prefix=5, prompt=LengthDistribution(40, 20, 1, 80))
    expected = _fingerprint(generate(p, num_requests=60))
    monkeypatch.setattr(dist, "_TOKEN_CHUNK", 100)  # force many small bulk calls
    assert _fingerprint(generate(p, num_requests=60)) == expected


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf"), float("-inf")])
def test_bad_rate_names_flag(rate):
    with pytest.raises(WorkloadError, match=r"^--rate must be a finite number > 0, got "):
        generate(rate=rate)


def test_rate_is_checked_before_ranges():
    bad = LengthDistribution(mean=1, stdev=1, min=5, max=9)
    with pytest.raises(WorkloadError, match="--rate"):
        generate(params(prompt=bad), rate=0)


def test_negative_num_requests():
    with pytest.raises(WorkloadError, match="--num-requests must be >= 0, got -1"):
        generate(num_requests=-1)


@pytest.mark.parametrize(
    ("prompt", "output", "pattern"),
    [
        (LengthDistribution(5000, 10, 2, 4000), DEFAULT_LAW, r"--prompt-tokens must lie in .*5000"),
        (LengthDistribution(1, 10, 2, 4000), DEFAULT_LAW, r"--prompt-tokens must lie in .*got 1$"),
        (DEFAULT_LAW, LengthDistribution(9, 1, 10, 20), r"--output-tokens must lie in .*got 9$"),
        (LengthDistribution(10, 1, 20, 5), DEFAULT_LAW, r"--prompt-tokens-min must be <= "),
        (DEFAULT_LAW, LengthDistribution(10, 1, 20, 5), r"--output-tokens-min must be <= "),
        (LengthDistribution(10, -1, 2, 20), DEFAULT_LAW, r"--prompt-tokens-stdev must be >= 0"),
        (DEFAULT_LAW, LengthDistribution(10, -3, 2, 20), r"--output-tokens-stdev .* got -3$"),
        (LengthDistribution(0, 0, 0, 10), DEFAULT_LAW, r"--prompt-tokens-min must be >= 1"),
        (DEFAULT_LAW, LengthDistribution(0, 0, -1, 10), r"--output-tokens-min must be >= 0"),
    ],
)
def test_invalid_lengths_name_the_flag(prompt, output, pattern):
    p = params(prompt=prompt, output=output)
    with pytest.raises(WorkloadError, match=pattern) as info:
        validate_distribution(p)
    assert "\n" not in str(info.value)
    with pytest.raises(WorkloadError, match=pattern):
        generate(p)


def test_negative_prefix_tokens():
    with pytest.raises(WorkloadError, match=r"^--prefix-tokens must be >= 0, got -4$"):
        validate_distribution(params(prefix=-4))


def test_output_min_zero_is_allowed():
    p = params(output=LengthDistribution(0, 0, 0, 10))
    validate_distribution(p)
    reqs = generate(p, num_requests=5)
    assert len(reqs) == 5 and all(r.num_output_tokens == 0 for r in reqs)


def test_q18_stdev_larger_than_max_is_allowed():
    # The reference also demanded stdev in [min, max]; we only demand stdev >= 0 (Q18).
    prompt = LengthDistribution(mean=100, stdev=10_000, min=50, max=200)
    output = LengthDistribution(mean=5, stdev=0, min=1, max=10)  # stdev below min is fine too
    validate_distribution(params(prompt=prompt, output=output))
    reqs = generate(params(prompt=prompt, output=output), num_requests=50)
    assert all(50 <= r.num_prompt_tokens <= 200 for r in reqs)
    assert all(r.num_output_tokens == 5 for r in reqs)
