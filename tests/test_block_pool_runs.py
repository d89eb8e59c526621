"""The block pool's free queue keeps runs of empty blocks as one entry (issue 9). Against
a plain reference queue (one entry per block), random sequences of allocations, releases,
registrations and prefix hits must evict the same content in the same order: the same
hashes stay cached and the same number of blocks stays free after every operation. Block
ids may differ (empty blocks are interchangeable), so blocks are followed by handle.

The reference indexes content as vLLM's ``BlockHashToBlockMap`` does: every copy of a
hash, in registration order; a prefix hit uses the first, and evicting it hands the hash
to the next copy."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.kv.block_pool import BlockPool


class ReferencePool:
    """One free-queue entry per block, head first; freed blocks join the tail."""

    def __init__(self, n: int) -> None:
        self.ref = [0] * n
        self.hash: list[int | None] = [None] * n
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(n))
        self.copies: dict[int, list[int]] = {}  # hash -> every block holding it, in order

    @property
    def cached(self) -> dict[int, int]:
        return {h: blocks[0] for h, blocks in self.copies.items()}

    @property
    def num_free(self) -> int:
        return len(self.free)

    def take_new(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            b, _ = self.free.popitem(last=False)
            h = self.hash[b]
            if h is not None:
                self.copies[h].remove(b)
                if not self.copies[h]:
                    del self.copies[h]
                self.hash[b] = None
            self.ref[b] = 1
            out.append(b)
        return out

    def touch(self, ids: list[int]) -> None:
        for b in ids:
            if self.ref[b] == 0:
                del self.free[b]
            self.ref[b] += 1

    def release(self, ids: list[int]) -> None:
        for b in ids:
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free[b] = None

    def register(self, b: int, h: int) -> None:
        if self.hash[b] is None:
            self.hash[b] = h
            self.copies.setdefault(h, []).append(b)


ops = st.lists(
    st.tuples(st.sampled_from(["take", "release", "register", "hit"]), st.integers(0, 10**6)),
    max_size=300,
)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 24), ops)
def test_run_queue_evicts_like_a_plain_queue(num_blocks, program):
    pool, ref = BlockPool(num_blocks, 4), ReferencePool(num_blocks)
    held: list[list[tuple[int, int]]] = []  # per "request": (pool id, reference id) pairs
    same: dict[int, int] = {}  # pool id -> the reference id of the same handle
    for op, x in program:
        if op == "take" and pool.num_free:
            n = 1 + x % min(pool.num_free, 3 if x % 2 else 8)
            pairs = list(zip(pool.take_new(n), ref.take_new(n), strict=True))
            same.update(pairs)
            held.append(pairs)
        elif op == "release" and held:
            blocks = held.pop(x % len(held))
            if x % 3 == 0:
                blocks.reverse()
            ids = [a for a, _ in blocks]
            if x % 5 == 0:
                # release_private: the leading blocks held once and holding nothing (a
                # finished request's private blocks) skip the checks, same end state.
                k = 0
                while (
                    k < len(ids) and pool.ref_cnt[ids[k]] == 1 and pool.block_hash[ids[k]] is None
                ):
                    k += 1
                pool.release_private(ids, k if x % 2 else k // 2)
            else:
                pool.release(ids)
            ref.release([b for _, b in blocks])
        elif op == "register" and held:
            blocks = held[x % len(held)]
            a, b = blocks[(x // 7) % len(blocks)]
            h = x % 13  # few distinct hashes: collisions and re-registrations
            pool.register(a, h)
            ref.register(b, h)
        elif op == "hit":
            h = x % 13
            a, b = pool.lookup(h), ref.cached.get(h)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert same[a] == b  # the same copy: the first registered one still held
                pool.touch([a])
                ref.touch([b])
                held.append([(a, b)])
        assert pool.num_free == ref.num_free
        assert sorted(pool.cached) == sorted(ref.cached)
        pool.check_invariants()


def test_a_partly_taken_run_stays_at_the_head():
    pool = BlockPool(4, 4)
    empty, cached, rest = pool.take_new(2), pool.take_new(1), pool.take_new(1)
    pool.register(cached[0], 5)
    pool.release(empty)  # a run of two empty blocks
    pool.release(cached)  # then a block holding hash 5
    assert pool.free_block_ids()[2] == cached[0]
    pool.take_new(1)  # one block of the run; the other stays ahead of the cached block
    pool.take_new(1)
    assert pool.lookup(5) == cached[0]
    pool.take_new(1)  # now the cached block is evicted
    assert pool.lookup(5) is None
    pool.release(rest)
    pool.check_invariants()


def test_a_second_copy_of_a_hash_outlives_the_first():
    """Two requests computing one prefix block at once leave two copies; evicting the
    copy prefix hits use hands the hash to the other (vLLM indexes every copy)."""
    pool = BlockPool(3, 4)
    first, second = pool.take_new(1), pool.take_new(1)
    pool.register(first[0], 7)
    pool.register(second[0], 7)
    assert pool.lookup(7) == first[0]
    pool.release(first)
    pool.take_new(1)  # the never-used block
    pool.take_new(1)  # evicts the first copy
    assert pool.lookup(7) == second[0]
    pool.check_invariants()
    pool.release(second)
    pool.take_new(1)  # evicts the last copy
    assert pool.lookup(7) is None
    pool.check_invariants()


def test_evicting_a_later_copy_keeps_the_first():
    pool = BlockPool(2, 4)
    first, second = pool.take_new(1), pool.take_new(1)
    pool.register(first[0], 7)
    pool.register(second[0], 7)
    pool.release(second)
    pool.take_new(1)
    assert pool.lookup(7) == first[0]
    pool.check_invariants()
