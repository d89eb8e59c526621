"""Named random streams derived from one run seed.

Every consumer of randomness asks for a stream by name. Each name maps to its own
``numpy.random.SeedSequence`` (the run seed plus a stable hash of the name as spawn
key), so adding a new consumer never shifts the draws of an existing one.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _name_key(name: str) -> tuple[int, int]:
    """Stable 128-bit key of a stream name (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=16).digest()
    return (int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little"))


#: Seeds are 64-bit: a larger seed would wrap onto another one's streams, so inputs
#: refuse it (issue 21). A negative one is the reference's int64 seed: see
#: :func:`seed_from_int64`.
MAX_SEED = 2**64 - 1

#: The most negative seed the reference's int64 ``--seed`` (and spec ``seed``) can hold.
MIN_INT64_SEED = -(2**63)


def seed_from_int64(seed: int) -> int:
    """A negative seed in int64 range as its two's complement (-1 -> 2^64 - 1); others as
    they are.

    The reference's seeds are int64, so its command lines may pass ``--seed -1``; this
    simulator's are unsigned 64-bit. Reading the same 64 bits keeps the mapping one to
    one and deterministic: ``--seed -1`` and ``--seed 18446744073709551615`` are one run.
    """
    return seed & MAX_SEED if MIN_INT64_SEED <= seed < 0 else seed


class RandomStreams:
    """Factory of independent, reproducible generators keyed by name."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def generator(self, name: str) -> np.random.Generator:
        """The generator for ``name``; the same object on every call within a run."""
        gen = self._streams.get(name)
        if gen is None:
            entropy = self.seed & ((1 << 64) - 1)  # negative seeds wrap, still deterministic
            seq = np.random.SeedSequence(entropy=entropy, spawn_key=_name_key(name))
            gen = np.random.Generator(np.random.PCG64(seq))
            self._streams[name] = gen
        return gen

    def keyed(self, name: str, key: int) -> np.random.Generator:
        """A generator of its own for ``(name, key)`` -- one per request, say -- that
        depends only on the seed, the name and the key (not on who asks first). Not
        cached: the caller keeps it as long as it needs it."""
        entropy = self.seed & ((1 << 64) - 1)
        spawn_key = (*_name_key(name), int(key) & ((1 << 64) - 1))
        seq = np.random.SeedSequence(entropy=entropy, spawn_key=spawn_key)
        return np.random.Generator(np.random.PCG64(seq))

    def fresh(self, name: str) -> np.random.Generator:
        """A new generator for ``name`` starting from the beginning of its stream."""
        self._streams.pop(name, None)
        return self.generator(name)
