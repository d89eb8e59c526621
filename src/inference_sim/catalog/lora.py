"""Bytes of a LoRA adapter, from its rank and the base model's dimensions.

A LoRA adapter on a linear layer ``d_in -> d_out`` adds ``A`` (``rank x d_in``) and ``B``
(``d_out x rank``): ``rank x (d_in + d_out)`` parameters. We assume the adapter targets
every linear layer of each decoder block (PEFT's ``all-linear``: q, k, v, o, gate, up,
down), the largest common choice, so sizes are an upper bound for attention-only
adapters. Weights are stored at the model's ``dtype_bytes``.

Under tensor parallelism vLLM (``fully_sharded_loras`` off, its default) splits only one
factor of each adapted layer: a column-parallel layer (q, k, v, gate, up) keeps the whole
``A`` on every GPU and splits ``B``; a row-parallel one (o, down) splits ``A`` and keeps
the whole ``B`` (``lora/layers``: ``ColumnParallelLinearWithLoRA``,
``RowParallelLinearWithLoRA``). The activations follow the same layout.
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


#: Which of :func:`adapted_projections` are row-parallel under TP (o and down); the
#: others are column-parallel.
_ROW_PARALLEL = (False, False, False, True, False, False, True)


def lora_token_bytes(arch: ModelArchitecture, tp: int = 1) -> float:
    """Activation bytes one GPU's LoRA kernels move per token of a LoRA request.

    vLLM's shrink kernel reads each adapted layer's input (``d_in``) and its expand kernel
    reads and writes the layer's output (``2 x d_out``), for every adapted projection of
    every decoder layer -- work per token, apart from the adapter weights read once per
    step. At serving sizes it is memory-bound. Under TP a column-parallel layer's input is
    whole on every GPU and its output split; a row-parallel layer's input is split and its
    output whole (before the all-reduce).
    """
    t = max(tp, 1)
    per_layer = 0.0
    for (d_in, d_out), row in zip(adapted_projections(arch), _ROW_PARALLEL, strict=True):
        per_layer += d_in / t + 2 * d_out if row else d_in + 2 * d_out / t
    return arch.layers * per_layer * arch.dtype_bytes


def adapter_bytes_per_rank(arch: ModelArchitecture, tp: int = 1) -> float:
    """Bytes one GPU holds of a rank-1 adapter at tensor parallelism ``tp``: the whole
    ``A`` and ``1 / tp`` of ``B`` of a column-parallel layer, ``1 / tp`` of ``A`` and the
    whole ``B`` of a row-parallel one (Llama-3.1-8B at TP 8: 43 % of the adapter on each
    GPU, not 12.5 %)."""
    t = max(tp, 1)
    params = 0.0
    for (d_in, d_out), row in zip(adapted_projections(arch), _ROW_PARALLEL, strict=True):
        params += d_in / t + d_out if row else d_in + d_out / t
    return arch.layers * params * arch.dtype_bytes


def adapter_file_bytes_per_rank(arch: ModelArchitecture) -> float:
    """Bytes of a rank-1 adapter's file: what every TP worker reads from disk (vLLM loads
    the whole checkpoint into host memory on each worker and slices it on the way to
    the GPU)."""
    return adapter_params_per_rank(arch) * arch.dtype_bytes
