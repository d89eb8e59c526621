"""Synthetic token ids for replayed traces, and block-chain accounting of prefix reuse.

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
from collections.abc import Iterable, Sequence

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


class BlockChainCounter:
    """Counts prompt blocks that continue a block chain seen earlier (an infinite cache).

    Feed each request's block labels in order (hashes of token blocks, or a trace's hash
    ids); a block counts as reused when the same chain of labels up to and including it
    was seen before, which is exactly what a prefix cache with unlimited room would hit.
    """

    __slots__ = ("_seen", "reused", "total")

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.reused = 0
        self.total = 0

    def add_labels(self, labels: Iterable[object]) -> None:
        prev: object = 0x5EED
        seen = self._seen
        hit = True
        for label in labels:
            h = hash((prev, label))
            self.total += 1
            if hit and h in seen:
                self.reused += 1
            else:
                hit = False
                seen.add(h)
            prev = h

    def add_tokens(self, tokens: np.ndarray, block_size: int) -> None:
        """Full blocks of ``tokens`` only (a partial last block is never cached)."""
        full = len(tokens) // block_size
        if full:
            blocks = np.ascontiguousarray(tokens[: full * block_size]).reshape(full, block_size)
            self.add_labels(row.tobytes() for row in blocks)

    @property
    def ratio(self) -> float:
        return self.reused / self.total if self.total else 0.0
