"""Tensor parallelism across nodes: what a TP group larger than one server pays.

An NVLink (or xGMI) domain ends at the server: an HGX/DGX H100, H200, B200 or A100
baseboard holds 8 GPUs, an MI300X platform 8 OAM modules, and the 8-GPU PCIe servers the
catalog's other GPUs come in (AWS g5/g6/g6e.48xlarge) 8 cards. A TP degree above that
spans nodes, and every all-reduce then crosses the network between them, as NCCL: vLLM
enables its custom all-reduce kernel (what the calibrated model's ``allreduce_us``
prices) only when the whole group is on one node. The catalog (``GpuSpec``) has no
node-size or network field, so both live here, with their sources.

**Latency.** Measured once in the data: Vidur's NCCL profile of 16 A100s on two 8-GPU
nodes (``vidur-profiling/data/profiling/network/a100_dgx``, ``num_workers`` 16,
``devices_per_node`` 8): 65 µs for a 2 KiB message, 67.8 µs the intercept of a linear
fit over messages up to 1 MiB (decode sizes), against 62 / 44 µs for 8 GPUs on one node.
That figure prices every GPU: nothing measured another GPU's network.

**Bandwidth.** A ring all-reduce over two nodes crosses the network at two of its links
per ring; NCCL runs one ring (channel) per NIC, so each NIC carries 1/NICs of the data
and the bus bandwidth is the node's total network bandwidth, capped by the NVLink ring
inside the node: ``min(intra-node bus, node network)``. With one 400 Gb/s NIC per GPU
(DGX H100) that is 400 GB/s, about the NVLink ring's: across well-provisioned nodes the
cost of TP above 8 is the latency, not the bytes. A thinner network changes that: the
Vidur A100 nodes above reached 16.7 GB/s bus bandwidth (messages of 4 MiB and more),
what one 200 Gb/s NIC per node would give, not DGX A100's eight. Both the calibrated
and the roofline model use these (docs/calibration.md, docs/roofline.md); no
end-to-end run spans nodes, so a run that does is an extrapolation and its ``fidelity``
says so.
"""

from __future__ import annotations

import logging

__all__ = [
    "DEFAULT_GPUS_PER_NODE",
    "INTER_NODE_ALLREDUCE_US",
    "gpus_per_node",
    "node_network_gbs",
    "spans_nodes",
    "warn_spans_nodes",
]

#: GPUs per node (one NVLink/xGMI domain) unless :data:`_GPUS_PER_NODE` says otherwise:
#: NVIDIA DGX H100/H200/B200/A100 user guides (8 SXM GPUs per baseboard), AMD Instinct
#: MI300X platform (8 OAM), AWS g5/g6/g6e.48xlarge (8 A10G / L4 / L40S).
DEFAULT_GPUS_PER_NODE = 8
_GPUS_PER_NODE: dict[str, int] = {}

#: One inter-node all-reduce at decode sizes, µs: NCCL across two 8-GPU A100 nodes
#: (Vidur ``a100_dgx``, 16 workers, 8 per node; module docstring).
INTER_NODE_ALLREDUCE_US = 68.0

#: Network bandwidth of one node, GB/s per direction (all its NICs together).
_NODE_NETWORK_GBS: dict[str, float] = {
    # 8 x 400 Gb/s ConnectX-7, one per GPU (DGX H100 / H200 / B200 user guides).
    "H100": 400.0,
    "H200": 400.0,
    "B200": 400.0,
    # 8 x 200 Gb/s HDR ConnectX-6, one per GPU (DGX A100 user guide).
    "A100-SXM": 200.0,
    "A100-40GB": 200.0,
    # 8 x 400 Gb/s (AMD Instinct MI300X platform reference design).
    "MI300X": 400.0,
    # AWS instance network bandwidth: g6e.48xlarge 400 Gb/s (8 L40S), g6.48xlarge and
    # g5.48xlarge 100 Gb/s (8 L4, 8 A10G).
    "L40S": 50.0,
    "L4": 12.5,
    "A10G": 12.5,
}
#: GPUs not listed above: one 400 Gb/s NIC per GPU of an 8-GPU node, the HGX reference
#: design (an assumption).
DEFAULT_NODE_NETWORK_GBS = 400.0

_warned: set[tuple[str, int, bool]] = set()


def gpus_per_node(gpu_name: str) -> int:
    """GPUs in one NVLink/xGMI domain (server) of ``gpu_name``."""
    return _GPUS_PER_NODE.get(gpu_name, DEFAULT_GPUS_PER_NODE)


def spans_nodes(gpu_name: str, tp: int) -> bool:
    """True when a TP group of ``tp`` GPUs cannot fit in one node."""
    return tp > gpus_per_node(gpu_name)


def node_network_gbs(gpu_name: str) -> float:
    """Network bandwidth of one node of ``gpu_name`` GPUs (GB/s per direction): the bus
    bandwidth of an all-reduce that spans nodes, unless the node's own links are slower."""
    return _NODE_NETWORK_GBS.get(gpu_name, DEFAULT_NODE_NETWORK_GBS)


def warn_spans_nodes(gpu_name: str, tp: int, model: str, priced: bool = True) -> None:
    """Say once per (GPU, TP, pricing) that the TP group spans nodes (why: the step times
    change regime -- a TP 16 decode step is slower than TP 8 -- and nothing measured it
    end to end). ``priced``: the model prices the network (the calibrated model); else
    it keeps one node's all-reduce (the roofline, as the reference's formulas)."""
    key = (gpu_name, tp, priced)
    if key in _warned:
        return
    _warned.add(key)
    node = gpus_per_node(gpu_name)
    where = f"{model}: TP {tp} spans {-(-tp // node)} nodes of {node} {gpu_name} GPUs"
    if not priced:
        logging.getLogger("inference_sim").warning(
            "%s: the roofline model prices its all-reduce as within one node (the "
            "reference's formulas), so TP beyond a node looks faster than it is; "
            "--latency-model calibrated prices the network between nodes "
            "(docs/roofline.md#assumptions-and-limits)",
            where,
        )
        return
    logging.getLogger("inference_sim").warning(
        "%s: each all-reduce crosses the network between nodes (NCCL, %.0f us, node "
        "network %.4g GB/s); extrapolated, no measured run spans nodes "
        "(docs/calibration.md#tensor-parallelism-across-nodes)",
        where,
        INTER_NODE_ALLREDUCE_US,
        node_network_gbs(gpu_name),
    )
