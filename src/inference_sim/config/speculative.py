"""``--speculative-method`` and friends, checked and turned into a SpeculativeConfig.

Why here: the draft model's latency model is built from the catalog like the target's,
which only the config layer may do (docs/architecture.md). Every bad value ends as one
``ConfigError`` line (exit code 2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from inference_sim.catalog.architecture import ModelArchitecture, bundled_architecture
from inference_sim.config.errors import ConfigError
from inference_sim.instance.speculative import METHODS, SpeculativeConfig
from inference_sim.latency.base import LatencyModel
from inference_sim.latency.blackbox import LatencyConfigError

log = logging.getLogger("inference_sim")

__all__ = [
    "DEFAULT_ACCEPTANCE",
    "DRAFT_HEAD_LAYERS",
    "draft_fractions",
    "draft_head_fraction",
    "resolve_speculative",
]

#: Acceptance rate per draft position when --spec-acceptance-rate is not given.
#: Sources and caveats: docs/speculative-decoding.md ("Acceptance figures").
DEFAULT_ACCEPTANCE: dict[str, float] = {
    "mtp": 0.85,  # DeepSeek-V3 technical report: 2nd-token acceptance 85-90 %
    "eagle": 0.7,  # EAGLE paper (arXiv 2401.15077), per-position rates ~0.7-0.8 (chain)
    "eagle3": 0.8,  # illustrative: EAGLE-3 (arXiv 2503.01840) accepts more than EAGLE
    "ngram": 0.5,  # illustrative: depends entirely on how repetitive the text is
    "draft-model": 0.6,  # illustrative: depends on the draft/target pair
}
#: Transformer layers of one EAGLE/EAGLE-3/MTP draft head (one decoder layer in each).
DRAFT_HEAD_LAYERS = 1
#: Target depth assumed when the target's architecture is unknown (Llama-3.1-8B's 32).
FALLBACK_TARGET_LAYERS = 32
#: EAGLE-3's reduced draft vocabulary (its Llama-3 heads map to 32 000 tokens).
EAGLE3_DRAFT_VOCAB = 32_000


def draft_fractions(arch: ModelArchitecture | None, method: str) -> tuple[float, float, float]:
    """What one EAGLE/EAGLE-3/MTP draft forward costs relative to the target's step:
    ``(over body + LM head, over body, prefill)``.

    The first two are by the weights each reads, for the head's passes of one token per
    request (decode-sized, weight-bound): the head's decoder layer, its input projection
    (EAGLE's fc from 2 x hidden, EAGLE-3's from 3 x hidden) and the LM head (the target's,
    shared, or EAGLE-3's reduced vocabulary), against the target's layers and LM head --
    for a target step whose time counts the LM head (calibrated, blackbox) -- or against
    its layers alone (the roofline prices no LM head). The LM head is what makes a draft
    pass cost more than 1/layers of a step.

    The third is by FLOPs per token, for the first pass's other tokens (a prefill chunk's,
    compute-bound): vLLM's ``EagleProposer.propose`` (vllm/v1/spec_decode/eagle.py) runs
    the head's layer over every token of the step but computes logits only at
    ``last_token_indices``, one row per request, so per token it is the layer and the
    input projection against the target's layers: (layer + fc) / body.
    """
    if arch is None:
        f = DRAFT_HEAD_LAYERS / FALLBACK_TARGET_LAYERS
        return f, f, f
    p = arch.param_breakdown()
    body = float(p["attention"] + p["dense_mlp"] + p["shared"] + p["router"])
    if arch.moe is not None:  # a step reads the experts it touches: count top-k of them
        body += float(p["experts"]) * arch.moe.top_k / max(1, arch.moe.experts)
    layer = body / max(1, arch.layers)
    d = float(arch.hidden)
    head = float(arch.vocab) * d
    fc = {"eagle": 2.0, "eagle3": 3.0}.get(method, 0.0) * d * d
    draft_head = min(float(arch.vocab), EAGLE3_DRAFT_VOCAB) * d if method == "eagle3" else head
    weights = DRAFT_HEAD_LAYERS * layer + fc + draft_head
    return weights / (body + head), weights / body, (DRAFT_HEAD_LAYERS * layer + fc) / body


def draft_head_fraction(arch: ModelArchitecture | None, method: str) -> float:
    """One EAGLE/EAGLE-3/MTP draft pass of one token per request over a target decode step
    that counts the LM head, by the weights each reads (:func:`draft_fractions`)."""
    return draft_fractions(arch, method)[0]


def resolve_speculative(
    o: dict[str, Any],
    explicit: frozenset[str],
    architecture: ModelArchitecture | None,
    build_draft: Callable[[ModelArchitecture], LatencyModel],
) -> SpeculativeConfig | None:
    """The run's speculation settings, or None when ``--speculative-method`` is not set.

    ``build_draft`` builds the draft model's latency model from its architecture (same
    GPU, TP and latency-model kind as the target).
    """
    method = o["speculative_method"].strip().lower()
    rates = list(o["spec_acceptance_rate"])
    k = o["num_speculative_tokens"]
    if not method:
        for name in (
            "num_speculative_tokens",
            "spec_acceptance_rate",
            "spec_acceptance_concentration",
            "speculative_model",
            "spec_ngram_cpu_us",
        ):
            if name in explicit and o[name]:
                raise ConfigError(
                    f"--{name.replace('_', '-')} needs --speculative-method ({', '.join(METHODS)})"
                )
        return None
    if method == "draft_model":
        method = "draft-model"
    if method not in METHODS:
        raise ConfigError(
            f"--speculative-method must be one of {', '.join(METHODS)}, "
            f"got {o['speculative_method']!r}"
        )
    if k == 0:  # not given
        raise ConfigError(
            f"--speculative-method {method} needs --num-speculative-tokens K (tokens drafted "
            "per step, e.g. 3), as vLLM's speculative config does"
        )
    if k < 0:
        raise ConfigError(f"--num-speculative-tokens must be an integer > 0, got {k}")
    for a in rates:
        if not (math.isfinite(a) and 0.0 <= a <= 1.0):
            raise ConfigError(f"--spec-acceptance-rate values must be in [0, 1], got {a:g}")
    if not rates:
        rates = [DEFAULT_ACCEPTANCE[method]]
    if len(rates) == 1:
        rates = rates * k
    if len(rates) != k:
        raise ConfigError(
            f"--spec-acceptance-rate: give one value or one per draft position "
            f"({k} for --num-speculative-tokens {k}), got {len(rates)}"
        )
    concentration = float(o["spec_acceptance_concentration"])
    if not (math.isfinite(concentration) and concentration >= 0):
        raise ConfigError(
            f"--spec-acceptance-concentration must be a finite number >= 0, got {concentration:g}"
        )
    cpu_us = o["spec_ngram_cpu_us"]
    if cpu_us < 0:
        raise ConfigError(f"--spec-ngram-cpu-us must be >= 0, got {cpu_us}")
    draft_latency = None
    draft_name = o["speculative_model"].strip().lower()
    if method == "draft-model":
        if not draft_name:
            raise ConfigError(
                "--speculative-method draft-model needs --speculative-model NAME "
                "(a model with a bundled architecture; see `blis models`)"
            )
        arch = bundled_architecture(draft_name)
        if arch is None:
            raise ConfigError(
                f"--speculative-model {draft_name!r}: no bundled architecture for it "
                "(see `blis models`)"
            )
        try:
            draft_latency = build_draft(arch)
        except LatencyConfigError as exc:
            raise ConfigError(f"--speculative-model {draft_name!r}: {exc}") from None
    elif draft_name:
        raise ConfigError(
            f"--speculative-model is only for --speculative-method draft-model, not {method}"
        )
    if method != "ngram" and "spec_ngram_cpu_us" in explicit and o["spec_ngram_cpu_us"]:
        raise ConfigError(  # it prices the n-gram proposer only: never silently dropped
            f"--spec-ngram-cpu-us is only for --speculative-method ngram, not {method}"
        )
    _warn_unlike_vllm(method, architecture, draft_name)
    with_head, body_only, prefill = draft_fractions(architecture, method)
    return SpeculativeConfig(
        method=method,
        num_tokens=k,
        acceptance=tuple(float(a) for a in rates),
        concentration=concentration,
        seed=o["seed"],
        ngram_cpu_us=cpu_us,
        head_fraction=with_head,
        draft_latency=draft_latency,
        head_fraction_body=body_only,
        prefill_fraction=prefill,
    )


def _warn_unlike_vllm(method: str, target: ModelArchitecture | None, draft_name: str) -> None:
    """Settings vLLM would refuse or that cannot work as given: simulated anyway (a what-if
    is legitimate), but said."""
    if target is None:
        return
    if method == "mtp" and target.mtp_layers <= 0:
        log.warning(
            "--speculative-method mtp: %s's config.json has no multi-token-prediction layers "
            "(num_nextn_predict_layers), so vLLM refuses mtp for it; simulating one MTP head "
            "as if it had one",
            target.name,
        )
    draft = bundled_architecture(draft_name) if method == "draft-model" and draft_name else None
    # One tokenizer may sit in embedding tables padded to different sizes (Qwen2.5-1.5B
    # 151 936, Qwen2.5-7B 152 064): only a clearly different vocabulary is another one.
    if draft is not None and abs(draft.vocab - target.vocab) > 0.02 * target.vocab:
        log.warning(
            "--speculative-model %s: its vocabulary (%d tokens) differs from %s's (%d): a "
            "draft model must share the target's tokenizer for its tokens to be accepted",
            draft_name,
            draft.vocab,
            target.name,
            target.vocab,
        )
