"""Paged KV cache: the block pool and the per-request cache manager."""

from inference_sim.kv.block_pool import BlockPool
from inference_sim.kv.manager import KVCacheManager

__all__ = ["BlockPool", "KVCacheManager"]
