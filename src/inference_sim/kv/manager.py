"""Per-request KV block tables and prefix caching on top of a ``BlockPool``.

Follows vLLM's ``KVCacheManager``: a request's blocks cover its computed tokens plus
the tokens scheduled in the current step; every block that becomes full gets a
chained content hash (hash of the parent block's hash and this block's token ids),
so equal prefixes map to equal hash chains and can be shared.
"""

from __future__ import annotations

from inference_sim.instance.request import Request
from inference_sim.kv.block_pool import BlockPool

_ROOT_HASH = 0x5EED_CAFE


class KVCacheManager:
    """Allocates slots for scheduled tokens and finds cached prompt prefixes."""

    __slots__ = ("block_size", "enable_prefix_caching", "num_hashed", "pool", "tables")

    def __init__(
        self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True
    ) -> None:
        self.pool = BlockPool(num_blocks, block_size)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.tables: dict[int, list[int]] = {}  # request index -> block ids in order
        self.num_hashed: dict[int, int] = {}  # request index -> leading blocks registered

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_used(self) -> int:
        return self.pool.num_used

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- hashing -------------------------------------------------------------------
    def _block_hashes(self, req: Request, upto: int) -> list[int]:
        """Chained hashes of the request's first ``upto`` full blocks (memoised)."""
        hashes = req._block_hashes
        if hashes is None:
            hashes = []
            req._block_hashes = hashes
        if len(hashes) < upto:
            bs = self.block_size
            prompt = req.input_tokens
            n_prompt = req.num_prompt_tokens
            prev = hashes[-1] if hashes else _ROOT_HASH
            for i in range(len(hashes), upto):
                lo = i * bs
                hi = lo + bs
                if hi <= n_prompt:
                    chunk = prompt[lo:hi].tobytes()
                elif lo >= n_prompt:
                    chunk = req.output_tokens[lo - n_prompt : hi - n_prompt].tobytes()
                else:
                    chunk = prompt[lo:].tobytes() + req.output_tokens[: hi - n_prompt].tobytes()
                prev = hash((prev, chunk))
                hashes.append(prev)
        return hashes

    def find_cached_prefix(self, req: Request) -> list[int]:
        """Cached blocks matching the start of the tokens the request must (re)compute.

        At least one token is always left to compute (as vLLM): at most
        ``(prefill_target - 1) // block_size`` blocks are reused.
        """
        if not self.enable_prefix_caching:
            return []
        max_blocks = (req.prefill_target - 1) // self.block_size
        if max_blocks <= 0:
            return []
        lookup = self.pool.cached
        found = []
        for h in self._block_hashes(req, max_blocks):
            b = lookup.get(h)
            if b is None:
                break
            found.append(b)
        return found

    # --- allocation ----------------------------------------------------------------
    def allocate_slots(
        self, req: Request, num_new_tokens: int, cached_blocks: list[int] | None = None
    ) -> bool:
        """Make room for ``num_new_tokens`` more tokens of ``req``; False if it cannot fit.

        ``cached_blocks`` (prefix hits for a request being admitted) are referenced
        first; the request's computed tokens then start after them. Nothing changes
        when the allocation does not fit, so no rollback is needed.
        """
        pool = self.pool
        idx = req.index
        table = self.tables.get(idx)
        held = len(table) if table is not None else 0
        n_cached = len(cached_blocks) if cached_blocks else 0
        computed = req.num_computed_tokens + n_cached * self.block_size
        total = computed + num_new_tokens
        need_new = -(-total // self.block_size) - held - n_cached
        if need_new < 0:
            need_new = 0
        revive = pool.count_evictable(cached_blocks) if n_cached else 0
        if need_new + revive > pool.num_free:
            return False
        if table is None:
            table = []
            self.tables[idx] = table
            self.num_hashed[idx] = 0
        if n_cached:
            pool.touch(cached_blocks)  # type: ignore[arg-type]
            table.extend(cached_blocks)  # type: ignore[arg-type]
            self.num_hashed[idx] = n_cached
        if need_new:
            table.extend(pool.take_new(need_new))
        if self.enable_prefix_caching:
            full = total // self.block_size
            done = self.num_hashed[idx]
            if full > done:
                hashes = self._block_hashes(req, full)
                for i in range(done, full):
                    pool.register(table[i], hashes[i])
                self.num_hashed[idx] = full
        return True

    def decode_slot(self, req: Request, computed: int) -> bool:
        """Room for one decode token at position ``computed``; False if no block is free.

        The common case of :meth:`allocate_slots` for a running decoder: a new block is
        needed only when the token opens one, and a registration only when it fills one.
        """
        bs = self.block_size
        if computed % bs == 0:
            pool = self.pool
            free = pool._free
            if not free:
                return False
            b, _unused = free.popitem(last=False)
            h = pool.block_hash[b]
            if h is not None:
                if pool.cached.get(h) == b:
                    del pool.cached[h]
                pool.block_hash[b] = None
            pool.ref_cnt[b] = 1
            self.tables[req.index].append(b)
        if self.enable_prefix_caching and (computed + 1) % bs == 0:
            idx = req.index
            full = (computed + 1) // bs
            done = self.num_hashed[idx]
            if full > done:
                hashes = self._block_hashes(req, full)
                table = self.tables[idx]
                register = self.pool.register
                for i in range(done, full):
                    register(table[i], hashes[i])
                self.num_hashed[idx] = full
        return True

    def free(self, req: Request) -> None:
        """Release every block of ``req``; its last blocks become evictable first."""
        table = self.tables.pop(req.index, None)
        self.num_hashed.pop(req.index, None)
        if table:
            table.reverse()
            self.pool.release(table)

    def held_blocks(self, req: Request) -> int:
        table = self.tables.get(req.index)
        return len(table) if table is not None else 0

    def check_invariants(self) -> None:
        """KV conservation: references equal the block tables' holdings (INV-4)."""
        self.pool.check_invariants()
        counts = [0] * self.pool.num_blocks
        for table in self.tables.values():
            for b in table:
                counts[b] += 1
        assert counts == self.pool.ref_cnt, "reference counts differ from block tables"
