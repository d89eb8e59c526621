"""The CPU tier of a tiered KV cache: block contents kept in host memory, LRU.

An entry is the chained content hash of one full KV block (the same key the GPU prefix
cache uses) and the time it was offloaded. The tier holds at most ``capacity`` entries;
storing into a full tier drops its least recently used entry. "Used" is vLLM's
offloading manager's rule (``LRUOffloadingManager.touch``): a lookup for a request being
scheduled, and a store of its blocks, touch the request's blocks last to first, so a
prompt's first block -- the one every later prompt with that prefix needs first -- is the
most recent and its tail goes first. A content hash lives
on at most one tier at a time (see docs/kv-offload.md): it leaves the CPU when it is
loaded back, or when the GPU computes the same content again.

Offloads and reloads made while a step is formed happen before the step's start time
reaches the cache: they are stamped when :meth:`CpuTier.stamp` is called with it (when
the step is priced). Offloads caused by a request finishing carry its finish time.
"""

from __future__ import annotations

from collections import OrderedDict

#: Offload time of an entry stored in the current step, before :meth:`CpuTier.stamp`.
UNSTAMPED = -1
#: A block loaded back less than this many µs after its offload counts as thrashing.
THRASH_WINDOW_US = 1000


class CpuTier:
    """Up to ``capacity`` offloaded block contents, least recently used first."""

    __slots__ = (
        "_loading",
        "_reloaded",
        "_unstamped",
        "capacity",
        "cleared",
        "dropped",
        "entries",
        "keep_on_load",
        "kept",
        "offloads",
        "reloads",
        "skipped",
        "superseded",
        "thrash",
    )

    def __init__(self, capacity: int, keep_on_load: bool = False) -> None:
        if capacity <= 0:
            raise ValueError(f"CPU tier capacity must be > 0, got {capacity}")
        self.capacity = capacity
        #: Prefix caching off: the tier is a store the GPU copies from (vLLM's offloading
        #: connector), not the GPU cache's overflow: a load leaves the entry in place,
        #: and the GPU computing the content again does not drop it.
        self.keep_on_load = keep_on_load
        self.kept = 0  # reloads that left their entry in place (keep_on_load)
        # content hash -> offload time (µs), or UNSTAMPED in the current step.
        self.entries: OrderedDict[int, int] = OrderedDict()
        self.offloads = 0  # blocks copied GPU -> CPU
        self.reloads = 0  # blocks copied CPU -> GPU
        self.dropped = 0  # entries dropped because the tier was full (LRU)
        self.superseded = 0  # entries dropped because the GPU computed the content again
        self.cleared = 0  # entries lost with a restarted server (an autoscaled replica)
        self.thrash = 0  # reloads within THRASH_WINDOW_US of their offload
        #: blocks a full tier could not take (keep_on_load: every entry was in flight)
        self.skipped = 0
        self._unstamped: list[int] = []
        self._reloaded: list[int] = []  # offload times of this step's reloads
        self._loading: set[int] = set()  # entries read back in this step (keep_on_load)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self.entries

    def offload(self, block_hash: int, at: int = UNSTAMPED) -> None:
        """Store a block's content that is leaving the GPU, at time ``at`` if known."""
        entries = self.entries
        if self.keep_on_load and block_hash in entries:
            return  # stored already: the connector skips it (its touch comes separately)
        if entries.pop(block_hash, None) is not None:
            self.superseded += 1  # not expected: a hash is on one tier at a time
        elif len(entries) >= self.capacity:
            entries.popitem(last=False)
            self.dropped += 1
        entries[block_hash] = at
        if at == UNSTAMPED:
            self._unstamped.append(block_hash)
        self.offloads += 1

    def store_batch(self, block_hashes: list[int]) -> bool:
        """Store one request's blocks computed in this step, all or none (``keep_on_load``).

        vLLM's offloading manager prepares a request's new blocks as one batch
        (``LRUOffloadingManager.prepare_store``): it evicts least recently used entries
        that no transfer holds -- here, entries neither stored nor loaded in this step --
        and when they are too few it stores none of the batch. False (nothing stored,
        counted in ``skipped``) then. The hashes must not be in the tier already.
        """
        entries = self.entries
        need = len(entries) + len(block_hashes) - self.capacity
        if need > 0:
            loading = self._loading
            in_flight = sum(1 for h in self._unstamped if entries.get(h) == UNSTAMPED)
            in_flight += sum(1 for h in loading if h in entries)
            if len(entries) - in_flight < need:
                self.skipped += len(block_hashes)
                return False
            victims = []
            for h, stamp in entries.items():
                if stamp != UNSTAMPED and h not in loading:
                    victims.append(h)
                    if len(victims) == need:
                        break
            for h in victims:
                del entries[h]
            self.dropped += need
        for h in block_hashes:
            entries[h] = UNSTAMPED
        self._unstamped.extend(block_hashes)
        self.offloads += len(block_hashes)
        return True

    def touch(self, block_hashes: list[int]) -> None:
        """Mark a request's stored blocks as used, last to first (vLLM's LRU touch)."""
        entries = self.entries
        move = entries.move_to_end
        for h in reversed(block_hashes):
            if h in entries:
                move(h)

    def take(self, block_hash: int) -> None:
        """Remove an entry that is being loaded back into a GPU block (with
        ``keep_on_load``: copy it, the entry stays where the lookup's touch put it)."""
        if self.keep_on_load:
            self._reloaded.append(self.entries[block_hash])
            self._loading.add(block_hash)  # no store may evict it while it is read
            self.kept += 1
        else:
            self._reloaded.append(self.entries.pop(block_hash))
        self.reloads += 1

    def discard(self, block_hash: int) -> None:
        """The GPU holds this content again (recomputed): the CPU copy is not needed
        (kept with ``keep_on_load``: the GPU's copy is no cache anybody hits)."""
        if self.keep_on_load:
            return
        if self.entries.pop(block_hash, None) is not None:
            self.superseded += 1

    def stamp(self, now: int) -> None:
        """Give this step's offloads the time ``now`` and judge its reloads for thrashing."""
        if self._unstamped:
            entries = self.entries
            for h in self._unstamped:
                if entries.get(h) == UNSTAMPED:
                    entries[h] = now
            self._unstamped.clear()
        if self._reloaded:
            for t in self._reloaded:
                if t == UNSTAMPED or now - t < THRASH_WINDOW_US:
                    self.thrash += 1
            self._reloaded.clear()
        self._loading.clear()

    def clear(self) -> None:
        """Lose every entry (a restarted server), counted in ``cleared``."""
        self.cleared += len(self.entries)
        self.entries.clear()
        self._unstamped.clear()
        self._reloaded.clear()
        self._loading.clear()

    def check_invariants(self) -> None:
        assert len(self.entries) <= self.capacity, "CPU tier holds more entries than capacity"
        left = (
            self.offloads
            - (self.reloads - self.kept)
            - self.dropped
            - self.superseded
            - self.cleared
        )
        assert left == len(self.entries), "CPU tier counters do not add up to its entries"
