"""Prefix hashing and the router-side prefix index used by prefix-aware routing.

Two families of block hashes:

* :func:`hash_tokens`, :func:`hash_block`, :func:`block_hashes` -- the reference's
  SHA-256 chain over decimal token text (bit-identical to its test vectors), for
  interoperability;
* :func:`router_block_hashes` -- what the router uses: a chained 64-bit hash of each
  complete block's token ids. The router only compares hashes for equality, so
  decisions are the same as with SHA-256 (barring a 2^-64 collision), at about a
  twentieth of the cost.

:class:`PrefixCacheIndex` is the router's approximation of what each instance caches:
it records what the router sent where (an LRU set of block hashes per instance,
10,000 hashes each by default), not what the instance really holds.

10,000 is the reference's figure and stays the default, but it is a fixed count of
blocks, not of prompts: a Mooncake prompt is ~750 blocks of 16 tokens, so the index
remembers ~13 prompts per instance while an instance's KV cache holds ~66,000 blocks, and
prefix-aware routing misses most of the reuse (docs/policies.md, "Prefix index
capacity", has the numbers). ``PrefixAffinityScorer(index_capacity=...)`` sets it; a
plug-in subclass of that scorer is the way to set it from the command line or a bundle.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from inference_sim.core.request import Request
from inference_sim.kv.manager import KVCacheManager

#: Block hashes the router remembers per instance (the reference's figure; see the module
#: doc for why long-context traces want more).
DEFAULT_INDEX_CAPACITY = 10_000


def hash_tokens(tokens: Sequence[int]) -> str:
    """SHA-256 (hex) of the tokens' decimal texts joined with ``|``."""
    return hashlib.sha256("|".join(str(int(t)) for t in tokens).encode()).hexdigest()


def hash_block(prev_hex: str, tokens: Sequence[int]) -> str:
    """SHA-256 (hex) of ``prev_hex`` then each token's decimal text followed by ``|``."""
    text = prev_hex + "".join(f"{int(t)}|" for t in tokens)
    return hashlib.sha256(text.encode()).hexdigest()


def block_hashes(tokens: Sequence[int], block_size: int) -> list[str]:
    """Chained SHA-256 hashes of the complete blocks of ``tokens`` (partial tail ignored)."""
    out: list[str] = []
    prev = ""
    for k in range(len(tokens) // block_size):
        prev = hash_block(prev, tokens[k * block_size : (k + 1) * block_size])
        out.append(prev)
    return out


def router_block_hashes(request: Request, block_size: int) -> list[int]:
    """Chained 64-bit hashes of the request's complete prompt blocks (equality use only).

    The engine's own block hashes (the KV manager's, memoised on the request), so a
    request's prompt is hashed once for routing and prefix-cache lookups. The adapter
    starts the chain: a prompt cached under another LoRA adapter is no hit (llm-d keys
    its index by LoRA too)."""
    n = request.num_prompt_tokens // block_size
    return KVCacheManager.chained_hashes(request, block_size, n)[:n]


class PrefixCacheIndex:
    """Per instance, an LRU set of block hashes the router has sent there."""

    __slots__ = ("capacity", "holders", "sets")

    def __init__(self, num_instances: int, capacity: int = DEFAULT_INDEX_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError(f"prefix index capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.sets: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(num_instances)]
        # Hash -> bit mask of the instances whose set holds it, so one walk over a
        # request's hashes gives every instance's match length (match_lengths).
        self.holders: dict[int, int] = {}

    def _grow(self, num_instances: int) -> None:
        while len(self.sets) < num_instances:
            self.sets.append(OrderedDict())

    def match_length(self, hashes: Sequence[int], instance: int) -> int:
        """How many of ``hashes``, from the first, the instance holds (no LRU refresh)."""
        if instance >= len(self.sets):
            return 0
        held = self.sets[instance]
        if not held:
            return 0
        n = 0
        for h in hashes:
            if h not in held:
                break
            n += 1
        return n

    def match_lengths(self, hashes: Sequence[int], num_instances: int) -> list[int]:
        """:meth:`match_length` for instances ``0 .. num_instances-1`` in one walk."""
        lengths = [len(hashes)] * num_instances
        alive = (1 << num_instances) - 1
        holders = self.holders
        for k, h in enumerate(hashes):
            held = holders.get(h, 0)
            dropped = alive & ~held
            if dropped:
                alive &= held
                while dropped:
                    low = dropped & -dropped
                    lengths[low.bit_length() - 1] = k
                    dropped ^= low
                if not alive:
                    break
        return lengths

    def forget(self, instance: int) -> None:
        """Drop everything recorded under ``instance``."""
        if instance >= len(self.sets):
            return
        bit = 1 << instance
        holders = self.holders
        for h in self.sets[instance]:
            mask = holders[h] & ~bit
            if mask:
                holders[h] = mask
            else:
                del holders[h]
        self.sets[instance] = OrderedDict()

    def record(self, hashes: Sequence[int], instance: int) -> None:
        """Note that ``hashes`` were sent to ``instance``, evicting the least recent."""
        self._grow(instance + 1)
        held = self.sets[instance]
        holders = self.holders
        bit = 1 << instance
        cap = self.capacity
        for h in hashes:
            if h in held:
                held.move_to_end(h)
            else:
                if len(held) >= cap:
                    old, _ = held.popitem(last=False)
                    mask = holders[old] & ~bit
                    if mask:
                        holders[old] = mask
                    else:
                        del holders[old]
                held[h] = None
                holders[h] = holders.get(h, 0) | bit
