"""Model architectures: what the roofline latency model and the KV-capacity estimate read.

Two sources, one record type (:class:`ModelArchitecture`):

* the package's own compact table ``data/architectures.json`` (no network access, no
  third-party files), looked up by lower-case model id with :func:`bundled_architecture`;
* any Hugging Face ``config.json`` (``--model-config-folder DIR``), read with
  :func:`read_model_config_folder` following the reference's field rules (engine.md
  §6.3): a ``text_config`` object is merged over the top level, a missing optional key
  reads as 0 and the first non-zero key of each list wins. Unlike the reference, a count
  must be a whole number (``32.0`` is, ``32.5`` is refused rather than truncated); a
  dense model without a feed-forward size takes the reference's 4 x hidden and one
  without ``vocab_size`` no embedding weights, each with a warning (it was silent).

Beyond the reference's dense fields the record carries what mixture-of-experts models
(Mixtral, Qwen-MoE, DeepSeek, Llama-4, gpt-oss), multi-head latent attention (DeepSeek)
and quantized checkpoints need; see ``docs/roofline.md``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from types import MappingProxyType
from typing import Any

from inference_sim.core.inputs import load_json, read_text
from inference_sim.core.suggest import did_you_mean

from .errors import CatalogError

__all__ = [
    "ARCHITECTURES_FORMAT",
    "QUANT_ACTIVATIONS",
    "GenerationDefaults",
    "LocalAttention",
    "MLASpec",
    "MoESpec",
    "ModelArchitecture",
    "WeightQuantization",
    "architecture_from_hf_config",
    "bundled_architecture",
    "bundled_architectures",
    "read_generation_config",
    "read_model_config_folder",
]

#: Value of the ``format`` field of ``data/architectures.json``.
ARCHITECTURES_FORMAT = "inference-sim-architectures/1"

#: Bytes per parameter for the dtype names a config may carry (engine.md §6.3, plus the
#: spelled-out float8 names).
DTYPE_BYTES: Mapping[str, float] = MappingProxyType(
    {
        "float32": 4,
        "float16": 2,
        "bfloat16": 2,
        "int8": 1,
        "uint8": 1,
        "fp8": 1,
        "float8_e4m3fn": 1,
        "float8_e5m2": 1,
        "int4": 1,
        "nf4": 1,
    }
)

_QUANT_SCOPES = ("linear", "mlp", "experts")


@dataclass(frozen=True, slots=True)
class MoESpec:
    """Mixture-of-experts feed-forward layers.

    ``expert_ffn`` is one routed expert's intermediate size; ``shared_ffn`` the total
    intermediate size of the always-active shared expert(s) (0: none); ``moe_layers``
    how many of the model's layers are MoE layers (the others are dense, with the
    architecture's ``ffn``).
    """

    experts: int
    top_k: int
    expert_ffn: int
    shared_ffn: int
    moe_layers: int


@dataclass(frozen=True, slots=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3 style).

    The KV cache holds one compressed latent of ``kv_lora_rank + qk_rope_head_dim``
    elements per token and layer, replicated on every tensor-parallel rank.
    """

    kv_lora_rank: int
    q_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def latent_dim(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim


#: ``LocalAttention.kind`` values.
LOCAL_ATTENTION_KINDS = ("sliding", "chunked")


@dataclass(frozen=True, slots=True)
class LocalAttention:
    """Layers whose attention sees only part of the context.

    ``sliding``: each token attends the last ``size`` positions (gpt-oss: 128 tokens in
    half its layers, Mistral-7B-v0.1: 4096 in all, Gemma); ``chunked``: each token
    attends the earlier tokens of its own ``size``-token chunk (Llama-4's chunked local
    attention: 8192 tokens in three of every four layers, the others global without
    RoPE). ``layers`` of the model's layers are local; the rest attend the whole context.
    Only the calibrated model prices it (attention FLOPs and KV reads of those layers).
    """

    kind: str
    size: int
    layers: int

    def span(self, position: int) -> int:
        """Tokens the token at 1-based ``position`` attends in a local layer."""
        if self.kind == "chunked":
            return (position - 1) % self.size + 1
        return min(position, self.size)

    def context_read(self, context: int) -> int:
        """Earlier tokens a chunk starting after ``context`` tokens reads in a local layer."""
        if self.kind == "chunked":
            return context % self.size
        return min(context, self.size)

    def attended(self, context: int, new: int) -> float:
        """Sum of :meth:`span` over positions ``context + 1 .. context + new`` (closed
        form): the causal attention work of a prefill chunk in one local layer, the
        counterpart of ``new x (context + (new + 1) / 2)`` for a global layer."""

        def upto(p: int) -> float:  # sum of span(1..p)
            w = self.size
            if self.kind == "chunked":
                q, r = divmod(p, w)
                return q * (w * (w + 1) / 2.0) + r * (r + 1) / 2.0
            if p <= w:
                return p * (p + 1) / 2.0
            return w * (w + 1) / 2.0 + (p - w) * float(w)

        return upto(context + new) - upto(context)


@dataclass(frozen=True, slots=True)
class GenerationDefaults:
    """The sampling defaults a model's ``generation_config.json`` declares.

    vLLM applies them to every request that does not set its own (``--generation-config
    auto``, the default since v0.8): an instruct model whose file sets ``top_p`` or
    ``top_k`` is served with a filtered sampler, which costs GPU time per request in
    proportion to the vocabulary (the logits are sorted or scanned row by row). Only
    the calibrated latency model reads this (:attr:`filters`); 1.0 / 0 mean "not set".
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def filters(self) -> bool:
        """True when sampling applies a top-p or top-k filter (not plain or greedy)."""
        if self.temperature <= 0.0:
            return False  # greedy: argmax only
        return self.top_p < 1.0 or self.top_k > 0

    @property
    def penalizes(self) -> bool:
        """True when a repetition, presence or frequency penalty applies (even greedy)."""
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    def describe(self) -> dict[str, float | int]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }

    @classmethod
    def from_mapping(cls, doc: Any, where: str) -> GenerationDefaults:
        """From a catalog entry or a ``generation_config.json`` (other keys ignored).

        ``do_sample: false`` means greedy decoding (temperature 0).
        """
        if not isinstance(doc, Mapping):
            raise CatalogError(f"{where}: expected a JSON object")
        values: dict[str, Any] = {}
        for key, kind in (
            ("temperature", float),
            ("top_p", float),
            ("top_k", int),
            ("repetition_penalty", float),
            ("presence_penalty", float),
            ("frequency_penalty", float),
        ):
            v = doc.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise CatalogError(f"{where}.{key}: expected a number, got {v!r}")
            if v < 0 and not key.endswith(("presence_penalty", "frequency_penalty")):
                raise CatalogError(f"{where}.{key}: must be >= 0, got {v}")
            values[key] = kind(v)
        if "top_p" in values and values["top_p"] > 1.0:
            raise CatalogError(f"{where}.top_p: must be <= 1, got {values['top_p']}")
        if doc.get("do_sample") is False:
            values["temperature"] = 0.0
        return cls(**values)


#: ``WeightQuantization.activations`` values: what the checkpoint's GEMMs take as inputs.
#: ``""`` means the source did not say (a record built by hand): the calibrated model then
#: falls back to the model id's ``fp8`` / ``w8a8``. Configs and bundled entries always say.
QUANT_ACTIVATIONS = ("", "none", "fp8", "int8")


@dataclass(frozen=True, slots=True)
class WeightQuantization:
    """How the checkpoint stores its weights and what its quantized GEMMs compute in.

    ``bytes_per_param`` applies to the weights named by ``scope``: ``linear`` (attention
    projections and feed-forward weights), ``mlp`` (all feed-forward weights) or
    ``experts`` (routed experts only). Embeddings, LM head and everything outside the
    scope stay at the architecture's ``dtype_bytes`` -- and run as 16-bit GEMMs: vLLM
    serves the layers a checkpoint leaves out (its ignore list) unquantized.
    """

    bytes_per_param: float
    scope: str = "linear"
    #: vLLM's online ``--quantization fp8`` (16-bit checkpoint quantized at load: FP8
    #: weights and activations, W8A8, in every linear layer). Only that option sets it.
    w8a8: bool = False
    #: The in-scope GEMMs' activations, as the checkpoint's ``quantization_config`` says
    #: (:data:`QUANT_ACTIVATIONS`): ``fp8`` / ``int8`` (W8A8: 8-bit tensor-core GEMMs),
    #: ``none`` (weight-only: 16-bit GEMMs), ``""`` not stated.
    activations: str = ""

    @property
    def gemm_dtype(self) -> str:
        """``fp8``, ``int8`` or ``""`` (16-bit) when the source says; ``"?"`` when not."""
        if self.w8a8:
            return "fp8"
        if self.activations == "none":
            return ""
        return self.activations or "?"


@dataclass(frozen=True, slots=True)
class ModelArchitecture:
    """The shape of a decoder-only transformer, as the roofline and memory models see it.

    ``ffn`` is the dense feed-forward size (0 means 4 x hidden, as the reference);
    ``head_dim`` 0 means hidden / heads. ``dtype_bytes`` is the reference's bytes per
    parameter (from ``torch_dtype``): the roofline uses it for weights, KV and
    activations alike. ``quantization`` changes the weight-memory estimate and, in the
    calibrated model, the stored weight bytes and which GEMMs run at an 8-bit rate.
    ``extra_params`` counts parameters outside the text decoder that a server loads
    anyway (a vision encoder), at ``dtype_bytes`` each.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    dtype_bytes: float
    head_dim: int = 0
    tied_embeddings: bool = False
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    quantization: WeightQuantization | None = None
    extra_params: int = 0
    source: str = ""
    #: Sampling defaults from the model's generation_config.json (None: none known).
    generation: GenerationDefaults | None = None
    #: Bytes per KV-cache element when the server stores KV in another dtype than the
    #: weights (vLLM ``--kv-cache-dtype fp8``: 1); 0: ``dtype_bytes``.
    kv_dtype_bytes: float = 0.0
    #: Multi-token-prediction layers the checkpoint ships (config.json
    #: ``num_nextn_predict_layers``: DeepSeek-V3, GLM-4.5); vLLM's ``mtp`` drafter needs one.
    mtp_layers: int = 0
    #: Sliding-window or chunked local attention layers (None: every layer is global).
    local_attention: LocalAttention | None = None
    #: The longest sequence the model was built for (config.json
    #: ``max_position_embeddings``; 0: unknown). vLLM's default ``--max-model-len`` is this
    #: length, and vLLM refuses to start when its KV cache cannot hold one request of it,
    #: so ``blis run`` warns about a deployment whose cache is smaller (docs/catalog.md).
    max_position_embeddings: int = 0

    # ------------------------------------------------------------- derived shape

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def uses_reference_formulas(self) -> bool:
        """Plain dense models get engine.md §6.3 exactly; MoE / MLA get our own terms."""
        return self.moe is None and self.mla is None

    @property
    def dense_ffn(self) -> int:
        return self.ffn if self.ffn > 0 else 4 * self.hidden

    @property
    def kv_head_dim(self) -> int:
        """The per-head size the KV cache stores (true head_dim when the config gives one)."""
        return self.head_dim if self.head_dim > 0 else self.hidden // self.heads

    @property
    def dense_layers(self) -> int:
        return self.layers - (self.moe.moe_layers if self.moe else 0)

    # ------------------------------------------------------------- parameters

    def attention_params_per_layer(self) -> int:
        d = self.hidden
        if self.mla is not None:
            m = self.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank > 0:
                q = d * m.q_lora_rank + m.q_lora_rank * self.heads * qk
            else:
                q = d * self.heads * qk
            kv_a = d * (m.kv_lora_rank + m.qk_rope_head_dim)
            kv_b = m.kv_lora_rank * self.heads * (m.qk_nope_head_dim + m.v_head_dim)
            o = self.heads * m.v_head_dim * d
            return q + kv_a + kv_b + o
        hd = self.kv_head_dim
        return d * (self.heads * hd + 2 * self.kv_heads * hd) + self.heads * hd * d

    def param_breakdown(self) -> dict[str, int]:
        """Parameter counts by group: attention, dense_mlp, shared, experts, router, embeddings."""
        d = self.hidden
        out = {
            "attention": self.layers * self.attention_params_per_layer(),
            "dense_mlp": self.dense_layers * 3 * d * self.dense_ffn,
            "shared": 0,
            "experts": 0,
            "router": 0,
            "embeddings": self.vocab * d * (1 if self.tied_embeddings else 2),
            "extra": self.extra_params,
        }
        if self.moe is not None:
            m = self.moe
            out["shared"] = m.moe_layers * 3 * d * m.shared_ffn
            out["experts"] = m.moe_layers * m.experts * 3 * d * m.expert_ffn
            out["router"] = m.moe_layers * d * m.experts
        return out

    def param_count(self) -> int:
        return sum(self.param_breakdown().values())

    def weight_bytes(self) -> float:
        """Bytes of all weights as stored (quantized where the checkpoint is)."""
        p = self.param_breakdown()
        full = self.dtype_bytes
        q = self.quantization
        if q is None:
            return float(sum(p.values())) * full
        scoped = {
            "linear": ("attention", "dense_mlp", "shared", "experts"),
            "mlp": ("dense_mlp", "shared", "experts"),
            "experts": ("experts",),
        }[q.scope]
        total = 0.0
        for group, count in p.items():
            total += count * (q.bytes_per_param if group in scoped else full)
        return total

    # ------------------------------------------------------------- KV cache

    def kv_bytes_per_token(self, tp: int = 1, kv_dtype_bytes: float | None = None) -> float:
        """KV-cache bytes one token occupies on one GPU (all layers).

        Standard attention: 2 (K and V) x layers x max(1, kv_heads // tp) x head_dim
        (vLLM's rule: beyond ``kv_heads`` GPUs each holds one replicated KV head; a ``tp``
        that splits heads unevenly is refused before, see :meth:`tp_problem`);
        MLA: layers x (kv_lora_rank + rope dim), replicated on every rank.
        """
        if kv_dtype_bytes is None:
            kv_dtype_bytes = self.kv_dtype_bytes or self.dtype_bytes
        b = kv_dtype_bytes
        if self.mla is not None:
            return float(self.layers * self.mla.latent_dim) * b
        heads = max(1, self.kv_heads // max(1, tp))
        return float(2 * self.layers * heads * self.kv_head_dim) * b

    def tp_problem(self, tp: int) -> str:
        """Why vLLM would refuse tensor parallelism ``tp`` for this model ("" if it is fine).

        vLLM shards the attention heads over the GPUs, so ``tp`` must divide them; the
        KV heads are split when ``tp`` is at most their number (so ``tp`` must divide
        them) and replicated otherwise (so their number must divide ``tp``), one KV head
        per GPU. MLA keeps one latent per token on every GPU and has only the first rule.

        The feed-forward layers are sharded too: ``ColumnParallelLinear`` and
        ``RowParallelLinear`` split the intermediate size with ``divide()``, which asserts
        an exact division, and the fused MoE layer splits each expert's intermediate size
        by TP (vLLM's default, without expert parallelism). So ``tp`` must divide the dense
        feed-forward size (where dense layers exist), the routed experts' and the shared
        experts' (Qwen2.5-1.5B's 8960 is not divisible by 6, which divides its heads).
        """
        if tp <= 1:
            return ""
        if self.heads % tp:
            return f"{self.heads} attention heads are not divisible by TP={tp}"
        if self.mla is None and self.kv_heads > 0:
            if tp <= self.kv_heads and self.kv_heads % tp:
                return f"{self.kv_heads} KV heads are not divisible by TP={tp}"
            if tp > self.kv_heads and tp % self.kv_heads:
                return f"TP={tp} is not a multiple of the {self.kv_heads} KV heads"
        if self.dense_layers > 0 and self.dense_ffn % tp:
            return f"the feed-forward size {self.dense_ffn} is not divisible by TP={tp}"
        m = self.moe
        if m is not None and m.expert_ffn % tp:
            return f"the experts' feed-forward size {m.expert_ffn} is not divisible by TP={tp}"
        if m is not None and m.shared_ffn > 0 and m.shared_ffn % tp:
            return (
                f"the shared experts' feed-forward size {m.shared_ffn} is not divisible by TP={tp}"
            )
        return ""

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (for listings and results)."""
        out: dict[str, Any] = {
            "name": self.name,
            "layers": self.layers,
            "hidden": self.hidden,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.kv_head_dim,
            "ffn": self.dense_ffn,
            "dtype_bytes": self.dtype_bytes,
            "params": self.param_count(),
        }
        if self.moe is not None:
            out["moe"] = {
                "experts": self.moe.experts,
                "top_k": self.moe.top_k,
                "expert_ffn": self.moe.expert_ffn,
                "shared_ffn": self.moe.shared_ffn,
                "moe_layers": self.moe.moe_layers,
            }
        if self.mla is not None:
            out["mla"] = {"kv_lora_rank": self.mla.kv_lora_rank, "latent": self.mla.latent_dim}
        if self.generation is not None:
            out["generation"] = self.generation.describe()
        if self.local_attention is not None:
            la = self.local_attention
            out["local_attention"] = {"kind": la.kind, "size": la.size, "layers": la.layers}
        return out


# --------------------------------------------------------------------------- HF config


_MAX_LAYERS = 100_000  # far above any real model (a typo guard)


#: Largest number read from a config.json: every size in a real one fits an int32
#: (vocabularies ~10^5-10^6, hidden sizes ~10^4); ``hidden_size: 1e300`` is a mistake.
_MAX_HF_VALUE = 2**31 - 1


class _HFReader:
    """Reads numeric fields of a merged HF config with the reference's rules."""

    __slots__ = ("doc", "label")

    def __init__(self, doc: Mapping[str, Any], label: str) -> None:
        self.doc = doc
        self.label = label

    def error(self, field: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.label}: {field}: {problem}")

    def int(self, key: str) -> int:
        """A JSON whole number (``32`` or ``32.0``); missing or null reads as 0.

        A fractional one (``num_attention_heads: 32.5``) is refused: the reference
        truncates it, so a typo silently became another model shape."""
        value = self.doc.get(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        if abs(value) > _MAX_HF_VALUE:  # sizes are int32 in every real config
            raise self.error(key, f"must be <= {_MAX_HF_VALUE:,}, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise self.error(key, f"expected a whole number (a count or size), got {value!r}")
        return int(value)

    def first(self, *keys: str) -> int:
        for key in keys:
            v = self.int(key)
            if v:
                return v
        return 0

    def positive_if_given(self, *keys: str) -> int:
        """Like :meth:`first`, but a key that is present must be > 0 unless a later key
        gives the value (issue 21: ``num_key_value_heads: 0`` alone used to read as
        missing and default silently; with ``num_kv_heads: 2`` after it, the reference
        reads 2, the first non-zero key).
        """
        bad: str | None = None
        for key in keys:
            if self.doc.get(key) is not None:
                v = self.int(key)
                if v > 0:
                    return v
                bad = bad or key
        if bad is not None:
            raise self.error(bad, f"must be > 0 (or left out), got {self.doc[bad]!r}")
        return 0

    def required(self, key: str, why: str = "") -> int:
        """A key that must be given and > 0 (``why``: when it is required, e.g.
        ``" for a dense model"``)."""
        v = self.int(key)
        if v <= 0:
            if key not in self.doc:
                what = "missing"
            elif self.doc[key] is None:
                what = "null"
            else:
                what = f"{self.doc[key]!r}"
            raise self.error(key, f"required{why} and must be > 0, got {what}")
        return v


#: Bytes per parameter vLLM serves a float32 checkpoint at: ``--dtype auto`` (the
#: default) casts float32 models to a 16-bit type (float16 before v0.10.1, bfloat16
#: since; ``ModelConfig._get_and_verify_dtype`` / ``_resolve_auto_dtype``), so their
#: weights and KV cache take 2 bytes per element on the GPU. The reference prices them
#: at 4; no golden case uses a float32 model (docs/differences.md).
SERVED_FLOAT32_BYTES = 2.0


def _dtype_bytes(r: _HFReader) -> float:
    for key in ("torch_dtype", "dtype"):
        value = r.doc.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise r.error(key, f"expected a dtype name, got {value!r}")
        name = value.lower().removeprefix("torch.")
        if name == "float32":
            return SERVED_FLOAT32_BYTES
        if name in DTYPE_BYTES:
            return DTYPE_BYTES[name]
        raise r.error(key, f"unknown dtype {value!r}; known: {', '.join(sorted(DTYPE_BYTES))}")
    raise r.error("torch_dtype", "missing (neither torch_dtype nor dtype is given)")


def _moe_layer_count(r: _HFReader, layers: int) -> int:
    """How many layers are MoE: Llama-4 / Qwen step, DeepSeek first-k-dense and frequency."""
    step = r.first("interleave_moe_layer_step", "decoder_sparse_step") or 1
    first_dense = r.int("first_k_dense_replace")
    freq = r.int("moe_layer_freq") or 1
    only_dense = r.doc.get("mlp_only_layers") or []
    if not isinstance(only_dense, list):
        raise r.error("mlp_only_layers", "expected a list of layer indices")
    skip = {int(i) for i in only_dense if isinstance(i, int | float)}
    explicit = r.doc.get("moe_layers")
    if isinstance(explicit, list) and explicit:
        return sum(1 for i in explicit if isinstance(i, int) and 0 <= i < layers)
    return sum(
        1
        for i in range(layers)
        if i >= first_dense and i not in skip and (i + 1) % step == 0 and i % freq == 0
    )


#: ``quant_method`` values already warned about (one warning per method and process).
_WARNED_QUANT_METHODS: set[str] = set()


#: Module-name parts of a multimodal checkpoint's vision tower and projector.
_VISION_PARTS = ("visual.", "vision_model", "vision_tower", "multi_modal_projector", "mm_projector")


def _is_vision_module(name: str) -> bool:
    """True for a module of the vision encoder or its projector (``re:`` patterns too)."""
    return any(part in name for part in _VISION_PARTS)


def _ignored_scope(ignored: Any) -> str:
    """The quantized scope left by a checkpoint's ignore list (module names or patterns).

    Attention ignored: ``mlp`` (feed-forward and experts quantized); attention and the
    shared expert ignored: ``experts`` (routed experts only, as Llama-4-Maverick FP8);
    else ``linear``. The LM head, embeddings and router are never in scope anyway.
    """
    names = [str(x).lower() for x in ignored] if isinstance(ignored, list) else []
    # A vision encoder's or projector's modules say nothing of the language model's
    # (llm-compressor writes the ignore list out in full: Qwen2.5-VL's visual.blocks.N.attn)
    names = [x for x in names if not _is_vision_module(x)]
    attn = any("self_attn" in x or "attention" in x or ".attn" in x for x in names)
    shared = any("shared_expert" in x for x in names)
    if attn and shared:
        return "experts"
    return "mlp" if attn else "linear"


def _ct_activations(group: Mapping[str, Any]) -> str:
    """compressed-tensors ``input_activations`` of a config group: ``fp8``, ``int8``, ``none``."""
    a = group.get("input_activations")
    if not isinstance(a, Mapping) or a.get("num_bits") != 8:
        return "none"  # w4a16 / w8a16: weight-only, 16-bit GEMMs (Marlin/Machete)
    return "fp8" if str(a.get("type", "int")).lower() == "float" else "int8"


def _modelopt(qc: Mapping[str, Any]) -> WeightQuantization | None:
    """NVIDIA TensorRT Model Optimizer checkpoints (``quant_method: modelopt``).

    ``quant_algo`` names the format (in ``quantization_config`` or, as ``hf_quant_config``
    writes it, under ``quantization``): ``FP8`` is W8A8 FP8 (per-tensor scales);
    ``NVFP4`` stores 4-bit values with one FP8 scale per 16 (4.5 bits); its FP4 GEMMs run
    only on Blackwell, which the model does not price: it is taken as weight-only. INT4
    AWQ stores 4 bits with a 16-bit scale per 128.
    """
    inner = qc.get("quantization")
    algo = str(
        qc.get("quant_algo") or (inner.get("quant_algo") if isinstance(inner, Mapping) else "")
    ).upper()
    ignored = qc.get("exclude_modules") or qc.get("ignore") or []
    scope = _ignored_scope(ignored)
    if algo.startswith("FP8"):
        return WeightQuantization(1.0, scope, activations="fp8")
    if algo == "NVFP4":
        return WeightQuantization(4.5 / 8, scope, activations="none")
    if algo in ("INT4_AWQ", "W4A16_AWQ", "W4A8_AWQ"):
        return WeightQuantization(0.5 + 2 / 128, scope, activations="none")
    if algo in ("INT8_SQ", "W8A8_SQ_PER_CHANNEL"):
        return WeightQuantization(1.0, scope, activations="int8")
    return None


def _quark_dtype(spec: Any) -> str:
    return str(spec.get("dtype", "")).lower() if isinstance(spec, Mapping) else ""


def _quark(qc: Mapping[str, Any]) -> WeightQuantization | None:
    """AMD Quark checkpoints (``quant_method: quark``): ``global_quant_config`` gives the
    weight dtype (``fp8_e4m3``, ``int8``, ``int4``/``uint4``, ``fp4``) and the
    ``input_tensors`` dtype (an 8-bit one: W8A8); ``exclude`` the unquantized layers."""
    g = qc.get("global_quant_config")
    if not isinstance(g, Mapping):
        return None
    w, a = _quark_dtype(g.get("weight")), _quark_dtype(g.get("input_tensors"))
    scope = _ignored_scope(qc.get("exclude") or [])
    act = "fp8" if a.startswith("fp8") else "int8" if a in ("int8", "uint8") else "none"
    if w.startswith("fp8") or w in ("int8", "uint8"):
        return WeightQuantization(1.0, scope, activations=act)
    if w in ("int4", "uint4"):
        return WeightQuantization(0.5 + 2 / 128, scope, activations="none")
    if w.startswith("fp4") or w.startswith("mxfp4"):
        return WeightQuantization(4.25 / 8, scope, activations="none")
    return None


def _quantization(r: _HFReader) -> WeightQuantization | None:
    """Storage and GEMM precision of quantized weights, from ``quantization_config``.

    The config, not the model's name, says whether activations are quantized: ``fp8``
    and ``fbgemm_fp8`` checkpoints are W8A8 FP8 (vLLM quantizes the activations
    dynamically or with the stored static scales), compressed-tensors checkpoints name
    their ``input_activations``, ModelOpt and Quark their formats. A ``quant_method``
    this reader does not know is priced as 16-bit weights, with a warning naming it.
    """
    qc = r.doc.get("quantization_config")
    if not isinstance(qc, Mapping):
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method in ("fp8", "fbgemm_fp8"):
        ignored = qc.get("ignored_layers") or qc.get("modules_to_not_convert") or []
        return WeightQuantization(1.0, _ignored_scope(ignored), activations="fp8")
    if method == "mxfp4":  # 4-bit values plus one 8-bit scale per 32 (gpt-oss: experts only)
        return WeightQuantization(4.25 / 8, "experts", activations="none")
    if method in ("gptq", "awq"):
        bits = qc.get("bits") or qc.get("w_bit") or 4
        group = qc.get("group_size") or qc.get("q_group_size") or 128
        per = bits / 8 + (2 / group if group and group > 0 else 0)
        return WeightQuantization(per, activations="none")
    if method == "bitsandbytes":
        return WeightQuantization(0.5 if qc.get("load_in_4bit") else 1.0, activations="none")
    if method == "compressed-tensors":
        groups = qc.get("config_groups")
        if isinstance(groups, Mapping):
            for group in groups.values():
                w = group.get("weights") if isinstance(group, Mapping) else None
                if isinstance(w, Mapping) and isinstance(w.get("num_bits"), int):
                    size = w.get("group_size")
                    per = w["num_bits"] / 8 + (2 / size if isinstance(size, int) and size else 0)
                    scope = _ignored_scope(qc.get("ignore") or [])
                    return WeightQuantization(per, scope, activations=_ct_activations(group))
        return None
    if method == "modelopt":
        found = _modelopt(qc)
    elif method == "quark":
        found = _quark(qc)
    else:
        found = None
    if found is None and method not in _WARNED_QUANT_METHODS:
        _WARNED_QUANT_METHODS.add(method)
        what = f"quant_method {method!r}" if method else "no quant_method"
        if method in ("modelopt", "quark"):
            what += " with a format this reader does not know"
        logging.getLogger("inference_sim").warning(
            "%s: quantization_config has %s (known: %s): its weights are priced at the "
            "config's dtype width and its GEMMs at 16 bits",
            r.label,
            what,
            ", ".join(KNOWN_QUANT_METHODS),
        )
    return found


#: The ``quant_method`` values :func:`_quantization` reads.
KNOWN_QUANT_METHODS = (
    "fp8",
    "fbgemm_fp8",
    "compressed-tensors",
    "gptq",
    "awq",
    "bitsandbytes",
    "mxfp4",
    "modelopt",
    "quark",
)


def _local_attention(r: _HFReader, layers: int) -> LocalAttention | None:
    """Sliding-window or chunked attention layers, from the config's own fields.

    * ``attention_chunk_size`` (Llama-4): chunked layers are those that use RoPE,
      ``no_rope_layers[i] == 1``; an empty list means transformers' default, every
      ``no_rope_layer_interval``-th layer (4) global.
    * ``layer_types`` (gpt-oss, Gemma-3, recent transformers): the ``sliding_attention``
      entries, window ``sliding_window``.
    * ``use_sliding_window: false`` (Qwen2/3): none, whatever ``sliding_window`` says; true:
      the layers from ``max_window_layers`` on.
    * ``sliding_window_pattern`` N (older Gemma-3 configs): all but every N-th layer;
      ``model_type`` gemma2: every other layer; otherwise a ``sliding_window`` applies to
      every layer (Mistral-7B-v0.1).
    A window at least as long as the position limit is no window.
    """
    doc = r.doc
    chunk = r.int("attention_chunk_size")
    if chunk > 0:
        flags = doc.get("no_rope_layers")
        if isinstance(flags, list) and flags:
            n = sum(1 for f in flags[:layers] if f)
        else:
            every = r.int("no_rope_layer_interval") or 4
            n = sum(1 for i in range(layers) if (i + 1) % every != 0)
        return LocalAttention("chunked", chunk, n) if n else None
    window = r.int("sliding_window")
    if window <= 0:
        return None
    limit = r.int("max_position_embeddings")
    if limit and window >= limit:
        return None
    types = doc.get("layer_types")
    if isinstance(types, list) and types:
        n = sum(1 for t in types[:layers] if str(t) == "sliding_attention")
    elif doc.get("use_sliding_window") is False:
        n = 0
    elif doc.get("use_sliding_window") is True:
        n = max(0, layers - r.int("max_window_layers")) if "max_window_layers" in doc else layers
    elif r.int("sliding_window_pattern") > 0:
        every = r.int("sliding_window_pattern")
        n = sum(1 for i in range(layers) if (i + 1) % every != 0)
    elif str(doc.get("model_type", "")) == "gemma2":
        n = (layers + 1) // 2
    else:
        n = layers
    return LocalAttention("sliding", window, n) if n else None


def _vision_params(doc: Mapping[str, Any]) -> int:
    """Rough parameter count of a vision encoder (layers x (4h^2 + 2hi)); 0 if none."""
    vc = doc.get("vision_config")
    if not isinstance(vc, Mapping):
        return 0
    try:
        h = int(vc.get("hidden_size") or 0)
        i = int(vc.get("intermediate_size") or 0)
        n = int(vc.get("num_hidden_layers") or 0)
    except (TypeError, ValueError):
        return 0
    return n * (4 * h * h + 2 * h * i)


def _warn_default(label: str, key: str, consequence: str) -> None:
    """One warning for a config.json field left out that a default stands in for."""
    logging.getLogger("inference_sim").warning(
        "%s: %s missing or 0: %s (give it in config.json to price the model exactly)",
        label,
        key,
        consequence,
    )


def architecture_from_hf_config(doc: Any, label: str, name: str = "") -> ModelArchitecture:
    """Build a :class:`ModelArchitecture` from a decoded HF ``config.json``.

    ``label`` names the file in error messages, which are one line naming the field.
    """
    if not isinstance(doc, Mapping):
        raise CatalogError(f"{label}: expected a JSON object, got {type(doc).__name__}")
    merged: dict[str, Any] = dict(doc)
    text = doc.get("text_config")
    if isinstance(text, Mapping):
        merged.update(text)
    r = _HFReader(merged, label)
    layers = r.required("num_hidden_layers")
    if layers > _MAX_LAYERS:  # layers are walked one by one (MoE layer patterns)
        raise r.error("num_hidden_layers", f"must be <= {_MAX_LAYERS}, got {layers}")
    hidden = r.required("hidden_size")
    heads = r.required("num_attention_heads")
    kv_key = "num_key_value_heads"
    kv_heads = r.positive_if_given(kv_key, "num_kv_heads", "multi_query_group_num") or heads
    if kv_heads > heads or heads % kv_heads:
        raise r.error(kv_key, f"must divide num_attention_heads ({heads}), got {kv_heads}")
    ffn = r.positive_if_given("intermediate_size", "ffn_hidden_size")
    vocab = r.int("vocab_size")
    if vocab <= 0:  # the reference never reads it; the KV-capacity estimate does
        _warn_default(label, "vocab_size", "no embedding or LM-head weights are counted")
    dtype_bytes = _dtype_bytes(r)
    head_dim = r.positive_if_given("head_dim")

    moe: MoESpec | None = None
    experts = r.first("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    if experts > 0:
        top_k = r.first("num_experts_per_tok", "experts_per_token", "moe_topk")
        if top_k <= 0:
            raise r.error(
                "num_experts_per_tok", f"required for a MoE model ({experts} experts), got 0"
            )
        expert_ffn = r.int("moe_intermediate_size") or ffn
        if expert_ffn <= 0:
            raise r.error("moe_intermediate_size", "required for a MoE model, got 0")
        shared = r.int("shared_expert_intermediate_size") or r.int("n_shared_experts") * expert_ffn
        model_type = str(merged.get("model_type", ""))
        if not shared and model_type.startswith("llama4"):
            shared = expert_ffn  # Llama-4 MoE layers always add one shared expert
        dense_ffn = r.int("intermediate_size_mlp") or ffn
        moe = MoESpec(
            experts=experts,
            top_k=min(top_k, experts),
            expert_ffn=expert_ffn,
            shared_ffn=shared,
            moe_layers=_moe_layer_count(r, layers),
        )
        ffn = dense_ffn
    elif ffn <= 0:  # the reference's rule (0 -> 4 x hidden), said aloud
        _warn_default(
            label, "intermediate_size", f"the feed-forward size is 4 x hidden = {4 * hidden}"
        )

    mla: MLASpec | None = None
    kv_lora = r.int("kv_lora_rank")
    if kv_lora > 0:
        mla = MLASpec(
            kv_lora_rank=kv_lora,
            q_lora_rank=r.int("q_lora_rank"),
            qk_nope_head_dim=r.required("qk_nope_head_dim"),
            qk_rope_head_dim=r.required("qk_rope_head_dim"),
            v_head_dim=r.required("v_head_dim"),
        )
    tied = merged.get("tie_word_embeddings", False)
    return ModelArchitecture(
        name=name or str(merged.get("_name_or_path") or label),
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        ffn=ffn,
        vocab=vocab,
        dtype_bytes=dtype_bytes,
        head_dim=head_dim,
        tied_embeddings=bool(tied),
        moe=moe,
        mla=mla,
        quantization=_quantization(r),
        extra_params=_vision_params(doc),
        source=label,
        mtp_layers=r.int("num_nextn_predict_layers"),
        local_attention=_local_attention(r, layers),
        max_position_embeddings=max(0, r.int("max_position_embeddings")),
    )


def read_model_config_folder(folder: str | os.PathLike[str], name: str = "") -> ModelArchitecture:
    """Read ``<folder>/config.json`` (a folder or the file itself may be given)."""
    path = os.fspath(folder)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    label = path
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise CatalogError(
            f"{label}: not found (--model-config-folder needs config.json)"
        ) from None
    except UnicodeDecodeError:
        raise CatalogError(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise CatalogError(f"{label}: cannot read ({exc.strerror or exc})") from None
    try:
        doc = load_json(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{label}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    arch = architecture_from_hf_config(doc, label, name)
    generation = read_generation_config(
        os.path.join(os.path.dirname(path), "generation_config.json")
    )
    if generation is not None:
        arch = replace(arch, generation=generation)
    return arch


def read_generation_config(path: str) -> GenerationDefaults | None:
    """The sampling defaults of a ``generation_config.json``, or None if there is none."""
    if not os.path.isfile(path):
        return None
    try:
        doc = load_json(read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return GenerationDefaults.from_mapping(doc, path)


# --------------------------------------------------------------------------- bundled


def _num(entry: Mapping[str, Any], key: str, where: str, *, default: Any = None) -> Any:
    value = entry.get(key, default)
    if value is None:
        raise CatalogError(f"{where}: missing required key {key}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(f"{where}.{key}: expected a number, got {value!r}")
    return value


def _parse_local(doc: Any, where: str, arch: ModelArchitecture) -> LocalAttention:
    """A bundled entry's ``local_attention: {kind, size, layers}``."""
    w = f"{where}.local_attention"
    if not isinstance(doc, Mapping):
        raise CatalogError(f"{w}: expected a mapping")
    kind = doc.get("kind")
    if kind not in LOCAL_ATTENTION_KINDS:
        raise CatalogError(f"{w}.kind: expected one of {', '.join(LOCAL_ATTENTION_KINDS)}")
    size, layers = int(_num(doc, "size", w)), int(_num(doc, "layers", w))
    if size <= 0 or not 0 < layers <= arch.layers:
        raise CatalogError(f"{w}: size must be > 0 and layers in 1..{arch.layers}")
    return LocalAttention(str(kind), size, layers)


def _activations(q: Mapping[str, Any], where: str, model_id: str) -> str:
    """A bundled quantization entry's ``activations``.

    Given explicitly, or else read from the bundled id, which names the checkpoint's
    scheme the way its publisher does (RedHatAI's ``-FP8-dynamic``: FP8 W8A8;
    ``quantized.w8a8``: INT8 W8A8; ``w4a16`` and the rest: weight-only), so a bundled
    record says what its config.json would (``tests/test_roofline_config.py``).
    """
    value = q.get("activations")
    if value is None:
        name = model_id.lower()
        if float(q.get("bytes_per_param", 0) or 0) != 1.0:
            return "none"
        return "fp8" if "fp8" in name else "int8" if "w8a8" in name else "none"
    if value not in QUANT_ACTIVATIONS or not value:
        raise CatalogError(
            f"{where}.quantization.activations: expected one of "
            f"{', '.join(v for v in QUANT_ACTIVATIONS if v)}, got {value!r}"
        )
    return str(value)


def _parse_entry(name: str, entry: Mapping[str, Any], where: str) -> ModelArchitecture:
    allowed = {
        "source",
        "layers",
        "hidden",
        "heads",
        "kv_heads",
        "head_dim",
        "ffn",
        "vocab",
        "dtype_bytes",
        "tied_embeddings",
        "moe",
        "mla",
        "quantization",
        "extra_params",
        "generation",
        "local_attention",
        "max_position_embeddings",
    }
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise CatalogError(
            f"{where}: unknown key {unknown[0]}{did_you_mean(unknown[0], allowed)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    moe = None
    if entry.get("moe") is not None:
        m = entry["moe"]
        w = f"{where}.moe"
        moe = MoESpec(
            experts=int(_num(m, "experts", w)),
            top_k=int(_num(m, "top_k", w)),
            expert_ffn=int(_num(m, "expert_ffn", w)),
            shared_ffn=int(_num(m, "shared_ffn", w, default=0)),
            moe_layers=int(_num(m, "moe_layers", w, default=_num(entry, "layers", where))),
        )
    mla = None
    if entry.get("mla") is not None:
        m = entry["mla"]
        w = f"{where}.mla"
        mla = MLASpec(
            kv_lora_rank=int(_num(m, "kv_lora_rank", w)),
            q_lora_rank=int(_num(m, "q_lora_rank", w, default=0)),
            qk_nope_head_dim=int(_num(m, "qk_nope_head_dim", w)),
            qk_rope_head_dim=int(_num(m, "qk_rope_head_dim", w)),
            v_head_dim=int(_num(m, "v_head_dim", w)),
        )
    quant = None
    if entry.get("quantization") is not None:
        q = entry["quantization"]
        scope = q.get("scope", "linear")
        if scope not in _QUANT_SCOPES:
            raise CatalogError(f"{where}.quantization.scope: expected one of {_QUANT_SCOPES}")
        quant = WeightQuantization(
            float(_num(q, "bytes_per_param", where)),
            scope,
            activations=_activations(q, where, name),
        )
    arch = ModelArchitecture(
        name=name,
        layers=int(_num(entry, "layers", where)),
        hidden=int(_num(entry, "hidden", where)),
        heads=int(_num(entry, "heads", where)),
        kv_heads=int(_num(entry, "kv_heads", where)),
        ffn=int(_num(entry, "ffn", where, default=0)),
        vocab=int(_num(entry, "vocab", where)),
        dtype_bytes=float(_num(entry, "dtype_bytes", where)),
        head_dim=int(_num(entry, "head_dim", where, default=0)),
        tied_embeddings=bool(entry.get("tied_embeddings", False)),
        moe=moe,
        mla=mla,
        quantization=quant,
        extra_params=int(_num(entry, "extra_params", where, default=0)),
        source=str(entry.get("source", "")),
        max_position_embeddings=int(_num(entry, "max_position_embeddings", where, default=0)),
        generation=(
            GenerationDefaults.from_mapping(entry["generation"], f"{where}.generation")
            if entry.get("generation") is not None
            else None
        ),
    )
    if entry.get("local_attention") is not None:
        arch = replace(arch, local_attention=_parse_local(entry["local_attention"], where, arch))
    for field in ("layers", "hidden", "heads", "kv_heads", "vocab"):
        if getattr(arch, field) <= 0:
            raise CatalogError(f"{where}.{field}: must be > 0")
    if arch.max_position_embeddings < 0:
        raise CatalogError(f"{where}.max_position_embeddings: must be >= 0 (0: unknown)")
    if not arch.source:
        raise CatalogError(f"{where}: every entry needs a source note")
    return arch


def parse_architectures(doc: Any, label: str) -> dict[str, ModelArchitecture]:
    """Validate a decoded ``architectures.json`` document."""
    if not isinstance(doc, Mapping) or doc.get("format") != ARCHITECTURES_FORMAT:
        raise CatalogError(f'{label}: expected "format": "{ARCHITECTURES_FORMAT}"')
    models = doc.get("models")
    if not isinstance(models, Mapping):
        raise CatalogError(f"{label}: models: expected a mapping")
    out: dict[str, ModelArchitecture] = {}
    pending = dict(models)
    # "same_as" entries copy another entry and override some of its fields.
    for _ in range(len(pending) + 1):
        progressed = False
        for model_id, entry in list(pending.items()):
            where = f"{label}: models.{model_id}"
            if model_id != model_id.lower():
                raise CatalogError(f"{where}: model ids must be lower-case")
            if not isinstance(entry, Mapping):
                raise CatalogError(f"{where}: expected a mapping")
            base_id = entry.get("same_as")
            if base_id is None:
                out[model_id] = _parse_entry(model_id, entry, where)
            elif base_id in out:
                base = out[base_id]
                overrides = {k: v for k, v in entry.items() if k != "same_as"}
                if "source" not in overrides:
                    raise CatalogError(f"{where}: every entry needs a source note")
                quant = overrides.pop("quantization", None)
                extra = overrides.pop("extra_params", None)
                gen = overrides.pop("generation", None)
                source = overrides.pop("source")
                if overrides:
                    raise CatalogError(
                        f"{where}: a same_as entry may only set source, quantization, "
                        f"extra_params, generation; got {', '.join(sorted(overrides))}"
                    )
                arch = replace(base, name=model_id, source=f"{source} (same as {base_id})")
                if quant is not None:
                    arch = replace(
                        arch,
                        quantization=WeightQuantization(
                            float(_num(quant, "bytes_per_param", where)),
                            quant.get("scope", "linear"),
                            activations=_activations(quant, where, model_id),
                        ),
                    )
                if extra is not None:
                    arch = replace(arch, extra_params=int(extra))
                if gen is not None:
                    arch = replace(
                        arch,
                        generation=GenerationDefaults.from_mapping(gen, f"{where}.generation"),
                    )
                out[model_id] = arch
            elif base_id not in pending:
                raise CatalogError(f"{where}.same_as: unknown model {base_id!r}")
            else:
                continue
            del pending[model_id]
            progressed = True
        if not pending or not progressed:
            break
    if pending:
        raise CatalogError(f"{label}: circular same_as among {', '.join(sorted(pending))}")
    return out


@functools.lru_cache(maxsize=1)
def _bundled() -> Mapping[str, ModelArchitecture]:
    label = "bundled architectures (inference_sim/catalog/data/architectures.json)"
    resource = resources.files(__package__).joinpath("data").joinpath("architectures.json")
    try:
        doc = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{label}: cannot be read ({exc})") from exc
    return MappingProxyType(parse_architectures(doc, label))


def bundled_architectures() -> Mapping[str, ModelArchitecture]:
    """Every architecture the package carries, by lower-case model id."""
    return _bundled()


def bundled_architecture(model_id: str) -> ModelArchitecture | None:
    """The bundled architecture of ``model_id`` (case-insensitive), or None."""
    return _bundled().get(model_id.strip().lower())


#: Hugging Face repositories renamed by their owners (the old id still redirects there):
#: Meta dropped the ``Meta-`` prefix of its Llama 3.1 repositories in 2024
#: (``meta-llama/Meta-Llama-3.1-8B-Instruct`` is now ``meta-llama/Llama-3.1-8B-Instruct``).
_RENAMED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("meta-llama/meta-llama-3.1-", "meta-llama/llama-3.1-"),
)


def renamed_model_id(model_id: str) -> str:
    """The current id of a renamed Hugging Face repository, when it is a bundled model.

    Lower-cased ids in, lower-cased out; an id that is bundled itself, or whose renamed
    form is not, comes back unchanged.
    """
    key = model_id.strip().lower()
    if key in _bundled():
        return key
    for old, new in _RENAMED_PREFIXES:
        if key.startswith(old) and new + key[len(old) :] in _bundled():
            return new + key[len(old) :]
    return key
