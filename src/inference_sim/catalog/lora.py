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


def adapter_params_per_rank(arch: ModelArchitecture) -> int:
    """Parameters of a rank-1 adapter on every linear layer (multiply by the rank)."""
    d = arch.hidden
    head = arch.kv_head_dim
    q_out = arch.heads * head
    kv_out = arch.kv_heads * head
    ffn = arch.dense_ffn
    per_layer = (
        (d + q_out)  # q_proj
        + 2 * (d + kv_out)  # k_proj, v_proj
        + (q_out + d)  # o_proj
        + 2 * (d + ffn)  # gate_proj, up_proj
        + (ffn + d)  # down_proj
    )
    return arch.layers * per_layer


def lora_token_bytes(arch: ModelArchitecture, tp: int = 1) -> float:
    """Activation bytes one GPU's LoRA kernels move per token of a LoRA request.

    vLLM's shrink kernel reads each adapted layer's input (``d_in``) and its expand kernel
    reads and writes the layer's output (``2 x d_out``), for every adapted projection of
    every decoder layer -- work per token, apart from the adapter weights read once per
    step. At serving sizes it is memory-bound.
    """
    d = arch.hidden
    head = arch.kv_head_dim
    q_out = arch.heads * head
    kv_out = arch.kv_heads * head
    ffn = arch.dense_ffn
    d_in = d + 2 * d + q_out + 2 * d + ffn  # q, k, v, o, gate, up, down inputs
    d_out = q_out + 2 * kv_out + d + 2 * ffn + d
    return arch.layers * (d_in + 2 * d_out) * arch.dtype_bytes / max(tp, 1)


def adapter_bytes_per_rank(arch: ModelArchitecture, tp: int = 1) -> float:
    """Bytes one GPU holds of a rank-1 adapter at tensor parallelism ``tp``."""
    return adapter_params_per_rank(arch) * arch.dtype_bytes / max(tp, 1)
