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


#: Seeds are 64-bit: a negative or larger seed would wrap onto another one's streams
#: (-1 and 2^64-1 would give the same workload), so inputs refuse them (issue 21).
MAX_SEED = 2**64 - 1


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
