"""Bytes of a LoRA adapter, from its rank and the base model's dimensions.

A LoRA adapter on a linear layer ``d_in -> d_out`` adds ``A`` (``rank x d_in``) and ``B``
(``d_out x rank``): ``rank x (d_in + d_out)`` parameters. We assume the adapter targets
every linear layer of each decoder block (PEFT's ``all-linear``: q, k, v, o, gate, up,
down), the largest common choice, so sizes are an upper bound for attention-only
adapters. Weights are stored at the model's ``dtype_bytes``. vLLM shards adapter
weights with the base layer under tensor parallelism, so a GPU holds ``1 / tp`` of them.
"""

from __future__ import annotations

from inference_sim.catalog.architecture import ModelArchitecture


def adapted_projections(arch: ModelArchitecture) -> tuple[tuple[int, int], ...]:
    """``(d_in, d_out)`` of each linear layer an adapter targets in one decoder block:
    q, k, v, o, gate, up, down."""
    d = arch.hidden
    q_out = arch.heads * arch.kv_head_dim
    kv_out = arch.kv_heads * arch.kv_head_dim
    ffn = arch.dense_ffn
    return ((d, q_out), (d, kv_out), (d, kv_out), (q_out, d), (d, ffn), (d, ffn), (ffn, d))


def adapter_params_per_rank(arch: ModelArchitecture) -> int:
    """Parameters of a rank-1 adapter on every linear layer (multiply by the rank)."""
    return arch.layers * sum(d_in + d_out for d_in, d_out in adapted_projections(arch))


def lora_token_bytes(arch: ModelArchitecture, tp: int = 1) -> float:
    """Activation bytes one GPU's LoRA kernels move per token of a LoRA request.

    vLLM's shrink kernel reads each adapted layer's input (``d_in``) and its expand kernel
    reads and writes the layer's output (``2 x d_out``), for every adapted projection of
    every decoder layer -- work per token, apart from the adapter weights read once per
    step. At serving sizes it is memory-bound.
    """
    per_layer = sum(d_in + 2 * d_out for d_in, d_out in adapted_projections(arch))
    return arch.layers * per_layer * arch.dtype_bytes / max(tp, 1)


def adapter_bytes_per_rank(arch: ModelArchitecture, tp: int = 1) -> float:
    """Bytes one GPU holds of a rank-1 adapter at tensor parallelism ``tp``."""
    return adapter_params_per_rank(arch) * arch.dtype_bytes / max(tp, 1)
