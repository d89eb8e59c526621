"""Paged KV blocks with reference counts and an LRU queue of free blocks.

Modelled on vLLM's ``BlockPool``: a block is in use while its reference count is
positive. Freed blocks keep their content hash and join the *tail* of the free
queue, so a later request with the same prefix can revive them; allocation takes
blocks from the *head*, evicting the least recently freed cached content first.
"""

from __future__ import annotations

from collections import OrderedDict

from inference_sim.kv.cpu_tier import CpuTier


class BlockPool:
    """Fixed set of ``num_blocks`` KV blocks of ``block_size`` tokens each."""

    __slots__ = (
        "_anon",
        "_copies",
        "_free",
        "_fresh",
        "_listed",
        "_run_key",
        "_tail_run",
        "block_hash",
        "block_size",
        "cached",
        "num_blocks",
        "ref_cnt",
        "shared_refs",
    )

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be > 0, got {num_blocks}")
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_cnt = [0] * num_blocks
        # References beyond the first, summed over blocks: how many block-table entries
        # point at a block another running request also holds (prefix-cache hits on
        # blocks in use). The step's attention reads such a block from HBM once.
        self.shared_refs = 0
        self.block_hash: list[int | None] = [None] * num_blocks
        # The free queue, head first: never-used blocks ``_fresh .. num_blocks-1`` (kept
        # as a counter, so a large cache costs nothing to set up), then ``_free``, whose
        # insertion order is eviction order. Freed blocks join the tail, so every
        # never-used block is taken before any freed one, as in one queue.
        #
        # In ``_free`` a key >= 0 is a freed block holding cached content; a key < 0 is
        # a run of freed *empty* blocks (value: how many), whose ids wait in ``_anon``.
        # Which empty block an allocation gets never matters (it holds nothing), only
        # where the run sits in the queue, so a request releasing hundreds of empty
        # blocks adds one entry, and an allocation takes them in one slice.
        self._fresh = 0
        self._free: OrderedDict[int, int | None] = OrderedDict()
        self._anon: list[int] = []
        self._listed = 0  # blocks in _free (cached ones plus the runs' counts)
        self._tail_run: int | None = None  # key of the last entry when it is a run
        self._run_key = 0
        # Content hash -> the block a prefix hit uses: the first registered copy. Two
        # requests computing the same prefix at once give it several copies; like
        # vLLM's BlockHashToBlockMap, the index keeps all of them (the later ones in
        # ``_copies``, in registration order), so evicting the copy in use hands the
        # hash to the next one instead of forgetting content still on the GPU.
        self.cached: dict[int, int] = {}
        self._copies: dict[int, list[int]] = {}

    # --- queries -------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks with no reference (cached or empty); allocatable right now."""
        return self._listed + self.num_blocks - self._fresh

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one running request."""
        return self._fresh - self._listed

    def lookup(self, block_hash: int) -> int | None:
        """The block holding ``block_hash``, or None on a cache miss."""
        return self.cached.get(block_hash)

    def free_block_ids(self) -> list[int]:
        """Free blocks in eviction order (head first); for checks and tests. Empty blocks
        of one run are interchangeable; they are listed in the order they would be taken."""
        out = list(range(self._fresh, self.num_blocks))
        anon = self._anon
        pos = len(anon)
        for key, count in self._free.items():
            if key >= 0:
                out.append(key)
            else:
                assert count is not None
                out.extend(reversed(anon[pos - count : pos]))
                pos -= count
        return out

    # --- mutations -----------------------------------------------------------------
    def take_new(self, n: int) -> list[int]:
        """Pop ``n`` blocks from the head of the free queue, evicting their cached content.

        The caller has already checked ``n <= num_free``.
        """
        ref = self.ref_cnt
        fresh = self._fresh
        if fresh < self.num_blocks:
            k = min(n, self.num_blocks - fresh)
            out = list(range(fresh, fresh + k))
            ref[fresh : fresh + k] = [1] * k
            self._fresh = fresh + k
            need = n - k
            if not need:
                return out
        else:
            out = []
            need = n
        self._listed -= need
        free = self._free
        anon = self._anon
        if need:
            # The usual case once every block has been used: the head entry is a run of
            # empty blocks longer than the need (a finished request's private blocks
            # return as one run). Take them from it in place; the rest stays at the head,
            # as the loop below leaves it (popitem, put back, move to the head).
            key = next(iter(free))
            if key < 0:
                count = free[key]
                if count > need:  # type: ignore[operator]  # (a run's count is an int)
                    free[key] = count - need
                    ids = anon[len(anon) - need :]
                    del anon[len(anon) - need :]
                    for b in ids:
                        ref[b] = 1
                    if out:
                        out.extend(ids)
                        return out
                    return ids
        hashes = self.block_hash
        while need:
            key, count = free.popitem(last=False)
            if key >= 0:
                h = hashes[key]
                if h is not None:
                    self._forget(h, key)
                    hashes[key] = None
                ref[key] = 1
                out.append(key)
                need -= 1
                continue
            assert count is not None
            take = count if count <= need else need
            ids = anon[len(anon) - take :]
            del anon[len(anon) - take :]
            for b in ids:
                ref[b] = 1
            out.extend(ids)
            need -= take
            if count > take:  # the rest of the run stays at the head
                free[key] = count - take
                free.move_to_end(key, last=False)
            elif key == self._tail_run:
                self._tail_run = None
        return out

    def touch(self, block_ids: list[int]) -> None:
        """Take a reference on cached blocks (prefix hits), reviving free ones."""
        free = self._free
        ref = self.ref_cnt
        shared = 0
        for b in block_ids:
            if ref[b] == 0:
                del free[b]
                self._listed -= 1
            else:
                shared += 1
            ref[b] += 1
        self.shared_refs += shared

    def release(self, block_ids_in_eviction_order: list[int]) -> None:
        """Drop one reference from each block; blocks reaching zero join the free tail."""
        free = self._free
        ref = self.ref_cnt
        hashes = self.block_hash
        anon_append = self._anon.append
        empty = 0  # empty blocks freed since the last cached one: one run entry
        listed = 0
        shared = 0
        for b in block_ids_in_eviction_order:
            r = ref[b] - 1
            ref[b] = r
            if r:
                shared += 1
            else:
                listed += 1
                if hashes[b] is None:
                    anon_append(b)
                    empty += 1
                else:
                    if empty:
                        self._add_run(empty)
                        empty = 0
                    free[b] = None
                    self._tail_run = None
        if empty:
            self._add_run(empty)
        self._listed += listed
        self.shared_refs -= shared

    def release_private(self, block_ids_in_eviction_order: list[int], n_private: int) -> None:
        """:meth:`release`, when the first ``n_private`` blocks are held by the caller
        alone and hold no content (a finished request's private blocks).

        Those need no per-block checks: they become one run of empty blocks at the
        tail, exactly as :meth:`release` would leave them, in a third of its time.
        """
        if n_private:
            private = block_ids_in_eviction_order[:n_private]
            ref = self.ref_cnt
            for b in private:
                ref[b] = 0
            self._anon.extend(private)
            self._add_run(n_private)
            self._listed += n_private
        if n_private < len(block_ids_in_eviction_order):
            self.release(block_ids_in_eviction_order[n_private:])

    def reacquire(self, block_ids_in_eviction_order: list[int], n_content: int) -> None:
        """Undo a :meth:`release` of these blocks: each is held once more, as before it.

        The newest releases are undone first, and nothing may have been freed or taken from
        the free queue's tail since (the caller reserves those blocks meanwhile), so the
        blocks that release queued are the queue's last entries. The last ``n_content``
        blocks are those that held content when released; the others were empty and sit in
        the tail run, from which any empty blocks are taken back (they are all alike: the
        list is updated with their ids). A block still referenced (held by another request
        at the release, or revived by a prefix hit since) just gets its reference back.
        """
        free = self._free
        ref = self.ref_cnt
        blocks = block_ids_in_eviction_order
        n = len(blocks)
        shared = 0
        listed = 0
        for i in range(n - 1, n - 1 - n_content, -1):
            b = blocks[i]
            r = ref[b]
            if r:
                ref[b] = r + 1
                shared += 1
                continue
            key, _unused = free.popitem()
            if key != b:
                raise AssertionError(f"block {b} is not at the free queue's tail ({key} is)")
            ref[b] = 1
            listed += 1
        n_empty = n - n_content
        if n_empty:
            key = next(reversed(free))
            count = free[key]
            if key >= 0 or count is None or count < n_empty:
                raise AssertionError(f"{n_empty} empty blocks are not at the free queue's tail")
            if count == n_empty:
                del free[key]
            else:
                free[key] = count - n_empty
            anon = self._anon
            ids = anon[len(anon) - n_empty :]
            del anon[len(anon) - n_empty :]
            for b in ids:
                ref[b] = 1
            blocks[:n_empty] = ids
            listed += n_empty
        self._listed -= listed
        self.shared_refs += shared
        last = next(reversed(free)) if free else 0
        self._tail_run = last if last < 0 else None

    def unregister(self, block_id: int) -> None:
        """Take a block's content out of the prefix cache (it was never cacheable)."""
        h = self.block_hash[block_id]
        if h is not None:
            self._forget(h, block_id)
            self.block_hash[block_id] = None

    def _add_run(self, count: int) -> None:
        """Append ``count`` empty blocks (already on ``_anon``) to the queue's tail."""
        tail = self._tail_run
        if tail is not None:
            self._free[tail] += count  # type: ignore[operator]
        else:
            self._run_key -= 1
            self._free[self._run_key] = count
            self._tail_run = self._run_key

    def _forget(self, h: int, block_id: int) -> bool:
        """Drop ``block_id`` from the index of ``h``; True when no copy of ``h`` is left
        on the GPU. The copy prefix hits use passes the role to the next registered one."""
        copies = self._copies.get(h)
        if self.cached.get(h) == block_id:
            if copies is None:
                del self.cached[h]
                return True
            self.cached[h] = copies.pop(0)
        elif copies is None:
            return False
        else:
            copies.remove(block_id)
        if not copies:
            del self._copies[h]
        return False

    def register(self, block_id: int, block_hash: int) -> None:
        """Record that a full block now holds the content identified by ``block_hash``."""
        if self.block_hash[block_id] is not None:
            return
        self.block_hash[block_id] = block_hash
        if self.cached.setdefault(block_hash, block_id) != block_id:
            self._copies.setdefault(block_hash, []).append(block_id)

    def register_many(self, block_ids: list[int], hashes: list[int], start: int, stop: int) -> None:
        """:meth:`register` ``block_ids[i]`` with ``hashes[i]`` for i in [start, stop)."""
        block_hash = self.block_hash
        setdefault = self.cached.setdefault
        for i in range(start, stop):
            b = block_ids[i]
            if block_hash[b] is None:
                h = hashes[i]
                block_hash[b] = h
                if setdefault(h, b) != b:
                    self._copies.setdefault(h, []).append(b)

    def count_evictable(self, block_ids: list[int]) -> int:
        """How many of ``block_ids`` currently sit in the free queue (ref 0)."""
        ref = self.ref_cnt
        return sum(1 for b in block_ids if ref[b] == 0)

    def check_invariants(self) -> None:
        """Raise AssertionError if block accounting is inconsistent (INV-4)."""
        in_use = sum(1 for r in self.ref_cnt if r > 0)
        assert in_use + self.num_free == self.num_blocks, "used + free != total"
        listed = 0
        run_total = 0
        for b, count in self._free.items():
            if b < 0:
                assert count is not None and count > 0, f"empty run {b} of {count} blocks"
                run_total += count
                listed += count
                continue
            listed += 1
            assert self.ref_cnt[b] == 0, f"free block {b} has references"
            assert b < self._fresh, f"block {b} is both never-used and freed"
        assert listed == self._listed, "free-queue count differs from its entries"
        assert run_total == len(self._anon), "empty runs differ from the empty blocks"
        for b in self._anon:
            assert self.ref_cnt[b] == 0 and self.block_hash[b] is None, f"empty block {b}"
        if self._tail_run is not None:
            assert next(reversed(self._free)) == self._tail_run, "tail run is not the tail"
        for b in range(self._fresh, self.num_blocks):
            assert self.ref_cnt[b] == 0 and self.block_hash[b] is None, f"fresh block {b} in use"
        assert all(r >= 0 for r in self.ref_cnt), "negative reference count"
        extra = sum(r - 1 for r in self.ref_cnt if r > 1)
        assert extra == self.shared_refs, "shared-reference count differs from the counts"
        self._check_index()

    def _check_index(self) -> None:
        """Every block holding content is indexed once: the hit copy or a later copy."""
        indexed = 0
        for h, b in self.cached.items():
            assert self.block_hash[b] == h, f"cache index points at block {b} without hash"
            indexed += 1
        for h, blocks in self._copies.items():
            assert blocks and h in self.cached, f"copies of hash {h} without its first copy"
            for b in blocks:
                assert self.block_hash[b] == h and b != self.cached[h], f"copy {b} misindexed"
            indexed += len(blocks)
        holding = sum(1 for h in self.block_hash if h is not None)
        assert indexed == holding, "blocks holding content differ from the cache index"


class TieredBlockPool(BlockPool):
    """A block pool whose cached content goes to a CPU tier instead of being lost.

    Content leaves the GPU in two ways, and in both it is stored on ``tier``:

    * eviction: an allocation reuses a free block that holds cached content;
    * offload (:meth:`offload_lru`): the least recently freed cached block is emptied
      on purpose, and the empty block moves to the head of the free queue so that the
      next allocation takes it before evicting other cached content.

    ``evictable`` lists the free blocks that hold content, in free-queue order, so
    that the occupancy (blocks holding KV data) is known in O(1).
    """

    __slots__ = ("evictable", "tier")

    def __init__(self, num_blocks: int, block_size: int, tier: CpuTier) -> None:
        super().__init__(num_blocks, block_size)
        # Offload moves emptied blocks to the head of the queue, so this pool keeps
        # every free block in the explicit queue rather than a never-used range.
        self._free = OrderedDict.fromkeys(range(num_blocks))
        self._fresh = num_blocks
        self.tier = tier
        self.evictable: OrderedDict[int, None] = OrderedDict()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def free_block_ids(self) -> list[int]:
        return list(self._free)

    @property
    def num_occupied(self) -> int:
        """Blocks holding KV data: referenced ones and free ones with cached content."""
        return self.num_blocks - len(self._free) + len(self.evictable)

    def take_new(self, n: int) -> list[int]:
        free = self._free
        ref = self.ref_cnt
        hashes = self.block_hash
        evictable = self.evictable
        tier = self.tier
        out = []
        for _ in range(n):
            b, _unused = free.popitem(last=False)
            h = hashes[b]
            if h is not None:
                del evictable[b]
                # the last copy on the GPU: to the CPU tier (prefix caching off: the tier
                # stored it when it was computed, and an eviction stores nothing)
                if self._forget(h, b) and not tier.keep_on_load:
                    tier.offload(h)
                hashes[b] = None
            ref[b] = 1
            out.append(b)
        return out

    def touch(self, block_ids: list[int]) -> None:
        free = self._free
        ref = self.ref_cnt
        evictable = self.evictable
        for b in block_ids:
            if ref[b] == 0:
                del free[b]
                evictable.pop(b, None)
            else:
                self.shared_refs += 1
            ref[b] += 1

    def release(self, block_ids_in_eviction_order: list[int]) -> None:
        free = self._free
        ref = self.ref_cnt
        hashes = self.block_hash
        evictable = self.evictable
        for b in block_ids_in_eviction_order:
            r = ref[b] - 1
            ref[b] = r
            if r:
                self.shared_refs -= 1
            else:
                free[b] = None
                if hashes[b] is not None:
                    evictable[b] = None

    def release_private(self, block_ids_in_eviction_order: list[int], n_private: int) -> None:
        """Every freed block may carry content to the CPU tier: the checked path."""
        self.release(block_ids_in_eviction_order)

    def reacquire(self, block_ids_in_eviction_order: list[int], n_content: int) -> None:
        """Not with a CPU tier: a release may have offloaded content (the KV manager frees
        the blocks of a request whose last token is in flight at once instead)."""
        raise NotImplementedError("reacquire() on a tiered block pool")

    def register(self, block_id: int, block_hash: int) -> None:
        if self.block_hash[block_id] is None:
            super().register(block_id, block_hash)
            # Prefix caching off (keep_on_load): vLLM's offloading connector stores a
            # computed block once the step is formed (KVCacheManager.flush_stores), so
            # the next prompt that starts with it finds it on the CPU even while this
            # request still runs. Prefix caching on: the GPU holds it again, not the CPU.
            if not self.tier.keep_on_load:
                self.tier.discard(block_hash)

    def register_many(self, block_ids: list[int], hashes: list[int], start: int, stop: int) -> None:
        for i in range(start, stop):
            self.register(block_ids[i], hashes[i])

    def offload_lru(self, at: int = -1) -> None:
        """Move the content of the least recently freed cached block to the CPU tier.

        ``at`` is the time of the offload, or -1 if the current step's start (stamped later).
        """
        b, _unused = self.evictable.popitem(last=False)
        h = self.block_hash[b]
        self.block_hash[b] = None
        if h is not None and self._forget(h, b) and not self.tier.keep_on_load:
            self.tier.offload(h, at)
        self._free.move_to_end(b, last=False)

    def check_invariants(self) -> None:
        in_use = sum(1 for r in self.ref_cnt if r > 0)
        assert in_use + self.num_free == self.num_blocks, "used + free != total"
        for b in self._free:
            assert self.ref_cnt[b] == 0, f"free block {b} has references"
        assert all(r >= 0 for r in self.ref_cnt), "negative reference count"
        extra = sum(r - 1 for r in self.ref_cnt if r > 1)
        assert extra == self.shared_refs, "shared-reference count differs from the counts"
        self._check_index()
        expected = [b for b in self._free if self.block_hash[b] is not None]
        assert list(self.evictable) == expected, "evictable list differs from the free queue"
        self.tier.check_invariants()
        if not self.tier.keep_on_load:
            for h in self.tier.entries:
                assert h not in self.cached, "content cached on both the GPU and the CPU tier"
