"""Synthetic token ids for replayed traces, and the hit rate of an unlimited prefix cache.

Traces record lengths, not token ids, yet the prefix cache needs ids whose equality means
"shared prefix". Replays therefore synthesise ids from keys: :func:`synth_tokens` maps a
64-bit key and positions to ids in ``[0, 128000)`` with a SplitMix64 finaliser, so the same
key always gives the same ids and different keys give unrelated ones (a 16-token block
collides with probability ~128000^-16). Keys come from :func:`stable_key`, which mixes a
run-level base (drawn from a named random stream) with labels such as a prefix group or a
Mooncake hash id.

A token sequence is described as segments ``(key, start, length)``; :func:`materialize`
turns segments into an ``int32`` array and :func:`take` keeps a leading part, which lets a
replay rebuild a conversation's context without keeping every earlier token in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

MAX_TOKEN_ID = 128000
Segment = tuple[int, int, int]

_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_MASK = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic, in place)."""
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def stable_key(*parts: object) -> int:
    """A 64-bit key from labels (independent of PYTHONHASHSEED)."""
    text = "\x1f".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def synth_tokens(key: int, start: int, length: int) -> np.ndarray:
    """Token ids at positions ``start .. start + length - 1`` of the sequence ``key``."""
    if length <= 0:
        return np.zeros(0, dtype=np.int32)
    x = np.arange(start, start + length, dtype=np.uint64)
    x *= _G
    x += np.uint64(key & _MASK)
    return (_mix(x) % np.uint64(MAX_TOKEN_ID)).astype(np.int32)


def block_keys(base: int, ids: Sequence[int]) -> np.ndarray:
    """One key per block label (e.g. Mooncake hash ids), as a uint64 array."""
    x = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    x *= _G
    x ^= np.uint64(base & _MASK)
    return _mix(_mix(x))


def block_tokens(keys: np.ndarray, block_size: int, length: int) -> np.ndarray:
    """The first ``length`` ids of the concatenated blocks ``keys`` (``block_size`` each)."""
    x = np.arange(block_size, dtype=np.uint64)[None, :] * _G + keys[:, None]
    flat = (_mix(x.reshape(-1)) % np.uint64(MAX_TOKEN_ID)).astype(np.int32)
    return flat[:length]


def take(segs: Sequence[Segment], n: int) -> list[Segment]:
    """The segments of the first ``n`` tokens of ``segs``."""
    out: list[Segment] = []
    left = n
    for key, start, length in segs:
        if left <= 0:
            break
        use = min(length, left)
        out.append((key, start, use))
        left -= use
    return out


def materialize(segs: Sequence[Segment]) -> np.ndarray:
    """The ``int32`` token ids of ``segs``."""
    if len(segs) == 1:
        return synth_tokens(*segs[0])
    if not segs:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate([synth_tokens(*s) for s in segs])


#: Start of every block chain (any constant: the chain hash of a block names its prefix).
_CHAIN_SEED = 0x5EED


class PrefixHitCounter:
    """Prompt tokens a prefix cache with unlimited room would hit (blocks as vLLM's).

    Feed the requests in arrival order. Each one first looks its prompt up, then leaves
    its blocks in the cache, as in a server whose cache never evicts:

    * the cache holds full ``block_size``-token KV blocks only, each named by the chain
      of its tokens and every token before it (vLLM's block hashes): a prompt hits the
      longest run of leading blocks some earlier request left behind;
    * at least one prompt token is always computed (vLLM's ``max_cache_hit_length`` is
      the prompt length minus one): a prompt seen before in full hits ``L - 1`` tokens
      rounded down to the block size, not ``L``;
    * the ratio is token-weighted: :attr:`hit_tokens` over :attr:`prompt_tokens` (every
      prompt token, the partial last block's too), the quantity ``blis run`` reports as
      ``prefix_cache_hit_rate``.

    Arrival order is the only notion of time: a request hits what any earlier one left,
    even one still running (the simulator, as vLLM, caches a block once it is scheduled,
    so this is what it does too; only eviction, absent here, makes it hit less).
    """

    __slots__ = ("_seen", "block_size", "hit_tokens", "prompt_tokens")

    def __init__(self, block_size: int) -> None:
        if block_size <= 0:
            raise ValueError(f"block size must be > 0, got {block_size}")
        self.block_size = block_size
        #: chain hash -> tokens of that block the cache holds (a label block may be
        #: cached in part: its tokens up to the last full KV block)
        self._seen: dict[int, int] = {}
        self.hit_tokens = 0
        self.prompt_tokens = 0

    def _count(self, length: int, matched: int) -> None:
        """One prompt of ``length`` tokens whose first ``matched`` tokens are cached."""
        self.prompt_tokens += length
        bs = self.block_size
        self.hit_tokens += min(matched, length - 1) // bs * bs

    def add_unique(self, length: int) -> None:
        """A prompt that shares no token with any other (an Azure trace's)."""
        self._count(length, 0)

    def add_labeled(self, labels: Sequence[object], label_size: int, length: int) -> None:
        """A prompt of ``length`` tokens given as blocks of ``label_size`` tokens named by
        ``labels`` (a Mooncake trace's hash ids; the last block may be partial).

        Equal labels stand for equal tokens, and a partial block holds the first tokens
        of its label's block (as the replay synthesises them): so the cached prefix of
        two prompts is their common leading labels plus, when the next label is equal
        too, the shorter of the two blocks. ``label_size`` need not be a multiple of the
        KV block size."""
        bs = self.block_size
        seen = self._seen
        keys: list[int] = []
        prev = _CHAIN_SEED
        for label in labels:
            prev = hash((prev, label))
            keys.append(prev)
        matched = 0
        for k, key in enumerate(keys):
            size = min(label_size, length - k * label_size)
            have = seen.get(key, 0)
            if have < size:
                matched += have
                break
            matched += size
        self._count(length, matched)
        cached = length // bs * bs  # full KV blocks of this prompt
        for k, key in enumerate(keys):
            cover = min(label_size, cached - k * label_size)
            if cover <= 0:
                break
            if seen.get(key, 0) < cover:
                seen[key] = cover

    def add_tokens(self, prompt: np.ndarray, output: np.ndarray | None = None) -> None:
        """A prompt given by its token ids; ``output`` (if known) is cached after it, as
        a server caches the blocks it fills while decoding (all but the last output
        token, whose KV is never computed): a multi-turn round that resends the previous
        answer hits it."""
        bs = self.block_size
        length = len(prompt)
        seq = prompt
        if output is not None and len(output) > 1:
            seq = np.concatenate((prompt, output[:-1]))
        full = len(seq) // bs
        keys: list[int] = []
        if full:
            blocks = np.ascontiguousarray(seq[: full * bs]).reshape(full, bs)
            prev = _CHAIN_SEED
            for row in blocks:
                prev = hash((prev, row.tobytes()))
                keys.append(prev)
        seen = self._seen
        matched = 0
        for key in keys[: max(0, (length - 1) // bs)]:
            if key not in seen:
                break
            matched += bs
        self._count(length, matched)
        for key in keys:
            seen[key] = bs

    @property
    def ratio(self) -> float:
        """Hit tokens over prompt tokens (0 without prompts)."""
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
