"""Per-request KV block tables and prefix caching on top of a ``BlockPool``.

Follows vLLM's ``KVCacheManager``: a request's blocks cover its computed tokens plus
the tokens scheduled in the current step; every block that becomes full gets a
chained content hash (hash of the parent block's hash and this block's token ids),
so equal prefixes map to equal hash chains and can be shared.

With a CPU tier (``cpu_blocks > 0``) the cache has two levels, as vLLM's CPU KV
offloading: content that leaves the GPU is kept in host memory, and a prompt prefix
that misses on the GPU continues on the CPU tier; those blocks are loaded back into
new GPU blocks instead of being recomputed, and the load time is charged to the step
(:meth:`KVCacheManager.take_transfer_time`). docs/kv-offload.md describes the model.
"""

from __future__ import annotations

import math
from itertools import islice
from typing import NamedTuple

import numpy as np

from inference_sim.core.request import Request, RequestState
from inference_sim.kv.block_pool import BlockPool, TieredBlockPool
from inference_sim.kv.cpu_tier import UNSTAMPED, CpuTier

_ROOT_HASH = 0x5EED_CAFE


def chain_root(root: int, adapter: str) -> int:
    """Start of a request's block-hash chain: vLLM puts the LoRA adapter into every block
    hash (``generate_block_hash_extra_keys``), so the same prompt under another adapter
    (or the base model) never shares KV blocks."""
    return hash((root, adapter)) if adapter else root


def block_bytes(tokens: np.ndarray, num_blocks: int) -> list[bytes]:
    """The bytes of each of ``num_blocks`` equal blocks of ``tokens``, split by numpy
    (much cheaper than slicing one bytes copy block by block)."""
    if not num_blocks:
        return []
    tokens = np.ascontiguousarray(tokens)
    return tokens.view(f"V{tokens.nbytes // num_blocks}").tolist()


#: Entry of :meth:`KVCacheManager.find_cached_prefix` for a block found on the CPU tier.
CPU_HIT = -1


class HeldOver(NamedTuple):
    """A request whose blocks are held over (:meth:`KVCacheManager.free_held_over`)."""

    blocks: list[int]  # in eviction order (as released)
    n_content: int  # the last n_content of them held content when released
    rank: int  # running requests before it in the batch
    cacheable: int  # tokens whose blocks stay cached should it be preempted (-1: all)
    request: Request


def block_transfer_time(block_size: int, bandwidth: float, base_latency: int) -> int:
    """µs to load one block back from the CPU: base + ceil(block_size / bandwidth).

    ``bandwidth`` is in tokens per µs (the reference's unit); the division is a float
    division, rounded up, as the reference computes it.
    """
    return int(base_latency + math.ceil(block_size / bandwidth))


class KVCacheManager:
    """Allocates slots for scheduled tokens and finds cached prompt prefixes."""

    __slots__ = (
        "_reacquired",
        "_stored_upto",
        "_stores_new",
        "_stores_running",
        "block_size",
        "block_transfer_us",
        "cache_known_tokens_only",
        "cpu",
        "cpu_hit_blocks",
        "cpu_lookup_blocks",
        "defer_private_hashes",
        "defer_stores",
        "drop_last_hit",
        "enable_prefix_caching",
        "hashing",
        "held_over",
        "held_over_free",
        "lazy_blocks",
        "num_hashed",
        "occupancy_limit",
        "pending_transfer_us",
        "pool",
        "request_transfers",
        "stores_refused",
        "tables",
        "transfer_us",
    )

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        *,
        enable_prefix_caching: bool = True,
        cpu_blocks: int = 0,
        offload_threshold: float = 0.9,
        transfer_bandwidth: float = 100.0,
        transfer_base_latency: int = 0,
    ) -> None:
        if cpu_blocks < 0:
            raise ValueError(f"cpu_blocks must be >= 0, got {cpu_blocks}")
        if not (math.isfinite(offload_threshold) and 0.0 <= offload_threshold <= 1.0):
            raise ValueError(f"offload_threshold must be in [0, 1], got {offload_threshold}")
        if transfer_base_latency < 0:
            raise ValueError(f"transfer_base_latency must be >= 0, got {transfer_base_latency}")
        self.cpu: CpuTier | None = None
        self.block_transfer_us = 0
        self.occupancy_limit = num_blocks
        if cpu_blocks > 0:
            if not (math.isfinite(transfer_bandwidth) and transfer_bandwidth > 0):
                raise ValueError(
                    f"transfer_bandwidth must be finite and > 0, got {transfer_bandwidth}"
                )
            # Prefix caching off: the tier keeps what it stores (vLLM's connector stores
            # a block as it is computed, whoever else computes the same content).
            self.cpu = CpuTier(cpu_blocks, keep_on_load=not enable_prefix_caching)
            self.pool: BlockPool = TieredBlockPool(num_blocks, block_size, self.cpu)
            self.block_transfer_us = block_transfer_time(
                block_size, transfer_bandwidth, transfer_base_latency
            )
            # Offload while more than this many blocks hold KV data (> threshold x total).
            self.occupancy_limit = math.floor(offload_threshold * num_blocks)
            if not enable_prefix_caching:
                # The GPU keeps no cache: a block's content goes to the CPU once computed
                # (vLLM's connector has stored it as it was computed).
                self.occupancy_limit = 0
        else:
            self.pool = BlockPool(num_blocks, block_size)
        self.block_size = block_size
        #: GPU prefix-cache hits (``--enable-prefix-caching``).
        self.enable_prefix_caching = enable_prefix_caching
        #: Blocks are hashed and registered: for GPU hits, or for a CPU tier, which vLLM
        #: fills through its KV connector with prefix caching on or off (the engine hashes
        #: blocks whenever a connector is configured).
        self.hashing = enable_prefix_caching or self.cpu is not None
        #: EAGLE-style speculation (eagle, eagle3, mtp): vLLM drops the last block of a
        #: prefix hit, whose hidden states the drafter needs recomputed
        #: (``find_longest_cache_hit`` with ``use_eagle``); set by the speculative engine.
        self.drop_last_hit = False
        #: Speculative decoding: allocations cache a request's blocks up to its known
        #: tokens (prompt + delivered outputs), not its draft or lookahead slots (vLLM's
        #: ``num_tokens_to_cache = min(computed + new, request.num_tokens)``); set by the
        #: speculative engine (its lookahead slots run past them).
        self.cache_known_tokens_only = False
        # Private blocks (Request.private_from) are hashed and registered only when the
        # request is preempted. Not with a CPU tier: there the hashes of blocks in use can
        # be copied to the CPU before the request ends.
        self.defer_private_hashes = enable_prefix_caching and self.cpu is None
        self.tables: dict[int, list[int]] = {}  # request index -> block ids in order
        # Blocks taken for decoders in bulk (reserve_lazy), not yet in their tables.
        self.lazy_blocks: list[int] = []
        self.num_hashed: dict[int, int] = {}  # request index -> leading blocks registered
        # Prefix caching off with a CPU tier: the connector stores a step's computed
        # blocks once the step is formed, requests admitted in it first, then the
        # running ones (vLLM's build_connector_meta); flush_stores does it.
        self.defer_stores = self.cpu is not None and self.cpu.keep_on_load
        self._stores_new: dict[int, Request] = {}
        self._stores_running: dict[int, Request] = {}
        self.stores_refused: dict[int, Request] = {}  # tried again every step
        self._stored_upto: dict[int, int] = {}  # request index -> leading blocks stored
        # Tiered cache: load time not yet charged to a step, and totals.
        self.pending_transfer_us = 0
        self.transfer_us = 0
        self.cpu_hit_blocks = 0  # blocks loaded back at admissions
        self.cpu_lookup_blocks = 0  # reusable prompt blocks that missed on the GPU
        # request index -> [blocks loaded back, transfer µs] (requests with reloads only)
        self.request_transfers: dict[int, list[int]] = {}
        #: Async scheduling: the blocks of requests whose last token is in flight, which
        #: vLLM frees only after the next batch is formed (free_held_over), in finish order.
        self.held_over: list[HeldOver] = []
        #: How many of those blocks are in the free queue, reserved: while no allocation
        #: needs them they stay there (nothing else changes), else _reacquire holds them.
        self.held_over_free = 0
        self._reacquired = False

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
        return self.chained_hashes(req, self.block_size, upto)

    @staticmethod
    def forget_hashes(req: Request) -> None:
        """Drop ``req``'s memoised block hashes: it completed, nothing looks them up
        again (the router fills them for every prompt block; kept, a million finished
        requests would hold them all)."""
        req._block_hashes = None
        req._hash_block_size = 0

    @staticmethod
    def chained_hashes(req: Request, block_size: int, upto: int) -> list[int]:
        """Chained hashes of the request's first ``upto`` full blocks, at least (memoised
        on the request: prefix-cache lookups and the router's prefix scorer share them)."""
        hashes = req._block_hashes
        if hashes is None or req._hash_block_size != block_size:
            hashes = []
            req._block_hashes = hashes
            req._hash_block_size = block_size
        have = len(hashes)
        if have < upto:
            bs = block_size
            prompt = req.input_tokens
            n_prompt = req.num_prompt_tokens
            prev = hashes[-1] if hashes else chain_root(_ROOT_HASH, req.adapter)
            # Whole prompt blocks: the bytes of each block from one numpy call (much
            # cheaper than one numpy slice and copy per block).
            stop = min(upto, n_prompt // bs)
            if have < stop:
                append = hashes.append
                for block in block_bytes(prompt[have * bs : stop * bs], stop - have):
                    prev = hash((prev, block))
                    append(prev)
                have = stop
            if have < upto:
                # Blocks reaching into the output: one bytes copy of the tokens they hold.
                lo = have * bs
                hi = upto * bs
                out = req.output_tokens
                if lo >= n_prompt:
                    raw = out[lo - n_prompt : hi - n_prompt].tobytes()
                else:
                    raw = prompt[lo:].tobytes() + out[: hi - n_prompt].tobytes()
                width = bs * out.itemsize
                append = hashes.append
                for off in range(0, len(raw), width):
                    prev = hash((prev, raw[off : off + width]))
                    append(prev)
        return hashes

    def find_cached_prefix(self, req: Request, *, touch: bool = True) -> list[int]:
        """Cached blocks matching the start of the tokens the request must (re)compute.

        ``touch`` False: a look that is no scheduling attempt (a router's question, a P/D
        decode side reserving transferred KV) leaves the CPU tier's LRU order alone.

        At least one token is always left to compute (as vLLM): at most
        ``(prefill_target - 1) // block_size`` blocks are reused. With a CPU tier the
        lookup continues there after the first GPU miss; each consecutive CPU hit is
        returned as :data:`CPU_HIT`, which :meth:`allocate_slots` loads back.
        """
        if not self.hashing:
            return []
        max_blocks = (req.prefill_target - 1) // self.block_size
        if self.defer_private_hashes and req.private_from >= 0 and not req.num_preemptions:
            # Private blocks are in the cache only after this request's own preemption.
            shareable = req.private_from // self.block_size
            if max_blocks > shareable:
                max_blocks = shareable
        cpu = self.cpu
        if max_blocks <= 0:
            if cpu is not None and touch:
                self._touch_cpu(req, 0)
            return []
        found = []
        hashes = self._block_hashes(req, max_blocks)
        if self.enable_prefix_caching:
            lookup = self.pool.cached
            for h in islice(hashes, max_blocks):  # (the router may have hashed more)
                b = lookup.get(h)
                if b is None:
                    break
                found.append(b)
        if cpu is not None and touch:
            self._touch_cpu(req, len(found))
        if cpu is not None and len(found) < max_blocks:
            entries = cpu.entries
            # Prefix caching off (keep_on_load): a block is stored once computed, so what
            # this step scheduled (stored, not yet stamped) does not exist yet for a
            # prompt admitted beside it (vLLM's connector stores after the forward pass).
            fresh = UNSTAMPED if cpu.keep_on_load else None
            for i in range(len(found), max_blocks):
                stored = entries.get(hashes[i])
                if stored is None or stored == fresh:
                    break
                found.append(CPU_HIT)
        if self.drop_last_hit and found:
            found.pop()
        return found

    def _touch_cpu(self, req: Request, start: int) -> None:
        """A scheduling attempt touches the request's CPU blocks, last to first, found or
        not (vLLM's connector, ``get_num_new_matched_tokens``): every full block of its
        tokens, the last one too (the lookup stops one token short of it). Blocks before
        ``start`` are GPU hits, which have no CPU copy (the tiers are exclusive with
        prefix caching on)."""
        n = req.prefill_target // self.block_size
        if n > start:
            self.cpu.touch(self._block_hashes(req, n)[start:n])  # type: ignore[union-attr]

    # --- allocation ----------------------------------------------------------------
    def allocate_slots(
        self,
        req: Request,
        num_new_tokens: int,
        cached_blocks: list[int] | None = None,
        *,
        delay_cache: bool = False,
        cpu_lookup: bool = True,
    ) -> bool:
        """Make room for ``num_new_tokens`` more tokens of ``req``; False if it cannot fit.

        ``cached_blocks`` (prefix hits for a request being admitted) are referenced
        first; the request's computed tokens then start after them. :data:`CPU_HIT`
        entries (they follow the GPU hits) get new GPU blocks, loaded from the CPU tier.
        Nothing changes when the allocation does not fit, so no rollback is needed.
        ``delay_cache``: the new blocks stay out of the prefix cache until
        :meth:`cache_blocks` (vLLM's ``delay_cache_blocks`` for a KV read still under
        way: nobody may hit blocks whose content has not arrived). ``cpu_lookup`` False:
        the CPU tier was not consulted for this prompt (a P/D decode side pulls what its
        GPU lacks from the prefill side), so its hit rate does not count it.
        """
        idx = req.index
        table = self.tables.get(idx)
        if cached_blocks is None and table is not None:
            # A running request growing (a decode step of the plain and speculative
            # steppers, a prefill chunk after the first): the general path below without
            # prefix hits, CPU loads or a new table, kept lean since it runs for every
            # running request in every step of those steppers.
            bs = self.block_size
            total = req.num_computed_tokens + num_new_tokens
            need_new = -(-total // bs) - len(table)
            if need_new > 0 or self.held_over_free:
                # (Otherwise the check below reads 0 > num_free, which never holds.)
                if need_new < 0:
                    need_new = 0
                pool = self.pool
                if need_new > pool.num_free - self.held_over_free:
                    if self.held_over and not self._reacquired:
                        self._reacquire()  # as below
                        return self.allocate_slots(
                            req, num_new_tokens, delay_cache=delay_cache, cpu_lookup=cpu_lookup
                        )
                    return False
                if need_new:
                    table.extend(pool.take_new(need_new))
            if self.hashing and not delay_cache:
                if self.cache_known_tokens_only:
                    known = req.num_prompt_tokens + req.delivered
                    if total > known:
                        total = known
                # _register_full(req, table, total) inline: most calls register nothing
                # (no block filled, or the filled one is private and waits).
                full = total // bs
                if self.defer_private_hashes and req.private_from >= 0:
                    shareable = req.private_from // bs
                    if full > shareable:
                        full = shareable
                done = self.num_hashed[idx]
                if full > done:
                    self.pool.register_many(table, self._block_hashes(req, full), done, full)
                    self.num_hashed[idx] = full
                    if self.defer_stores:
                        self._stores_running[idx] = req
            if self.cpu is not None:
                self._offload_over_threshold()
            return True
        pool = self.pool
        held = len(table) if table is not None else 0
        n_cached = len(cached_blocks) if cached_blocks else 0
        computed = req.num_computed_tokens + n_cached * self.block_size
        total = computed + num_new_tokens
        need_new = -(-total // self.block_size) - held - n_cached
        if need_new < 0:
            need_new = 0
        n_cpu = 0
        gpu_hits = cached_blocks
        if n_cached and cached_blocks[-1] == CPU_HIT:  # type: ignore[index]
            n_gpu = cached_blocks.index(CPU_HIT)  # type: ignore[union-attr]
            n_cpu = n_cached - n_gpu
            gpu_hits = cached_blocks[:n_gpu]  # type: ignore[index]
        revive = pool.count_evictable(gpu_hits) if gpu_hits else 0  # type: ignore[arg-type]
        if need_new + n_cpu + revive > pool.num_free - self.held_over_free:
            if self.held_over and not self._reacquired:
                # Perhaps only the blocks held over are missing: decide on the real state.
                self._reacquire()
                return self.allocate_slots(
                    req,
                    num_new_tokens,
                    cached_blocks,
                    delay_cache=delay_cache,
                    cpu_lookup=cpu_lookup,
                )
            return False
        if table is None:
            table = []
            self.tables[idx] = table
            self.num_hashed[idx] = 0
        if gpu_hits:
            pool.touch(gpu_hits)  # type: ignore[arg-type]
            table.extend(gpu_hits)  # type: ignore[arg-type]
        if n_cpu:
            self._load_back(req, table, n_cached - n_cpu, n_cpu)
        if n_cached:
            self.num_hashed[idx] = n_cached
        if cached_blocks is not None and self.cpu is not None and cpu_lookup:
            reusable = (req.prefill_target - 1) // self.block_size
            self.cpu_lookup_blocks += max(0, reusable - (n_cached - n_cpu))
            self.cpu_hit_blocks += n_cpu
        if need_new:
            table.extend(pool.take_new(need_new))
        if self.hashing and not delay_cache:
            if self.cache_known_tokens_only:
                known = req.num_prompt_tokens + req.delivered
                if total > known:
                    total = known
            self._register_full(req, table, total, admitted=cached_blocks is not None)
        if self.cpu is not None:
            self._offload_over_threshold()
        return True

    def _register_full(
        self, req: Request, table: list[int], tokens: int, *, admitted: bool = False
    ) -> None:
        """Put ``req``'s full blocks up to ``tokens`` in the prefix cache."""
        full = tokens // self.block_size
        if self.defer_private_hashes and req.private_from >= 0:
            # Private blocks wait for a preemption (free(); Request.private_from).
            shareable = req.private_from // self.block_size
            if full > shareable:
                full = shareable
        idx = req.index
        done = self.num_hashed[idx]
        if full > done:
            self.pool.register_many(table, self._block_hashes(req, full), done, full)
            self.num_hashed[idx] = full
            if self.defer_stores:
                (self._stores_new if admitted else self._stores_running)[idx] = req

    def cache_blocks(self, req: Request, tokens: int) -> None:
        """Put the blocks of ``req``'s first ``tokens`` tokens in the prefix cache: KV an
        allocation with ``delay_cache`` held back, once its content has arrived (vLLM's
        ``cache_blocks`` when the scheduler picks up a finished KV read)."""
        table = self.tables.get(req.index)
        if table is not None and self.hashing:
            self._register_full(req, table, tokens)

    def decode_slot(self, req: Request, computed: int) -> bool:
        """Room for one decode token at position ``computed``; False if no block is free.

        The common case of :meth:`allocate_slots` for a running decoder: a new block is
        needed only when the token opens one, and a registration only when it fills one.
        """
        bs = self.block_size
        if computed % bs == 0:
            pool = self.pool
            if pool._fresh < pool.num_blocks and self.cpu is None:
                b = pool._fresh
                pool._fresh = b + 1
                pool.ref_cnt[b] = 1
                self.tables[req.index].append(b)
            elif pool.num_free <= self.held_over_free:
                if self.held_over and not self._reacquired:
                    self._reacquire()
                    return self.decode_slot(req, computed)
                return False
            else:
                self.tables[req.index].append(pool.take_new(1)[0])
        if (
            self.hashing
            and (computed + 1) % bs == 0
            and (req.private_from < 0 or not self.defer_private_hashes)
        ):
            idx = req.index
            full = (computed + 1) // bs
            done = self.num_hashed[idx]
            if full > done:
                self.pool.register_many(self.tables[idx], self._block_hashes(req, full), done, full)
                self.num_hashed[idx] = full
                if self.defer_stores:
                    self._stores_running[idx] = req
        if self.cpu is not None:
            self._offload_over_threshold()
        return True

    def reserve_lazy(self, n: int) -> None:
        """Take ``n`` blocks from the free queue for decoders that open a block now.

        The fast stepper opens the blocks of many decoders in one call; which decoder
        holds which of these (identical, empty) blocks does not matter, so each
        decoder claims its share (:meth:`claim_lazy`) only when its table is next read.
        The caller has checked ``n <= pool.num_free``; not used with a CPU tier.
        """
        self.lazy_blocks.extend(self.pool.take_new(n))

    def claim_lazy(self, req: Request, n: int) -> None:
        """Move ``n`` blocks reserved by :meth:`reserve_lazy` into ``req``'s table."""
        lazy = self.lazy_blocks
        self.tables[req.index].extend(lazy[len(lazy) - n :])
        del lazy[len(lazy) - n :]

    def free(self, req: Request, at: int = UNSTAMPED, *, cacheable: int = -1) -> None:
        """Release every block of ``req``; its last blocks become evictable first.

        ``at``: when the blocks leave outside any step (a P/D transfer's end on the
        prefill side), the time their offloads are stamped with; by default a finished
        request's finish time, else the start of the step being formed.

        ``cacheable`` (>= 0): only the blocks of the first ``cacheable`` tokens may stay in
        the prefix cache (see :meth:`_uncache_tail`); by default all its computed tokens."""
        table = self.tables.pop(req.index, None)
        done = self.num_hashed.pop(req.index, None)
        if self.defer_stores:
            self._forget_stores(req.index)
        if (
            table
            and self.defer_private_hashes
            and req.private_from >= 0
            and req.state != RequestState.FINISHED
        ):
            # Deferred registration of private blocks (Request.private_from): they join
            # the cache now, before they become evictable, as if each had been registered
            # when filled, since no lookup could reach them meanwhile. A finished
            # request's private blocks are never registered: only the request itself,
            # recomputing after a preemption, could look them up.
            tokens = req.num_computed_tokens if cacheable < 0 else cacheable
            full = min(tokens // self.block_size, len(table))
            if done is not None and full > done:
                self.pool.register_many(table, self._block_hashes(req, full), done, full)
        elif cacheable >= 0 and table and done:
            self._uncache_tail(table, done, cacheable // self.block_size)
        if table:
            table.reverse()
            if (
                req.private_from >= 0
                and self.defer_private_hashes
                and req.state == RequestState.FINISHED
                and not req.num_preemptions
            ):
                # Its private blocks (the tail of the table, now the head) came fresh
                # from the pool, were never hashed and nobody else could look them up.
                private = len(table) - req.private_from // self.block_size
                self.pool.release_private(table, private if private > 0 else 0)
            else:
                self.pool.release(table)
        if self.cpu is not None:
            # A finished request leaves at its finish time (after the step was priced);
            # a preempted or dropped one while a step is formed (stamped with its start).
            done = req.state == RequestState.FINISHED and req.finish_time >= 0
            self._offload_over_threshold(req.finish_time if done else at)

    def _uncache_tail(self, table: list[int], num_hashed: int, keep: int) -> None:
        """Take blocks ``keep .. num_hashed-1`` of ``table`` (in table order) out of the
        prefix cache before they are freed, where no other request holds them.

        Async scheduling: vLLM registers a decode's block once the token it writes is
        known, i.e. when the next step is scheduled or the step's output is processed; a
        request preempted (or finished) in between never registers the block its last
        step filled (``AsyncScheduler._update_request_with_output`` skips requests no
        longer running). Not with a CPU tier (its content would have to be restored).
        """
        if self.cpu is not None:
            return
        pool = self.pool
        ref = pool.ref_cnt
        for j in range(keep, num_hashed):
            b = table[j]
            if ref[b] == 1:
                pool.unregister(b)

    # --- async scheduling: blocks held over ------------------------------------------
    def free_held_over(self, req: Request, rank: int, cacheable: int) -> None:
        """:meth:`free` ``req``, whose last token is in flight: vLLM (async scheduling)
        frees its blocks when that step's output is processed, after the next batch was
        formed, so that batch must still find them held.

        They are freed now anyway (between steps the cache shows them free, as vLLM's
        once the output is processed) but reserved: allocations may not use them until
        :meth:`end_held_over`. Only an allocation that would fail (or need them) takes them
        back (:meth:`_reacquire`); until then nothing touches them, so the result is
        vLLM's. ``rank`` is the request's place in the running batch (how many running
        requests came before it), should a preemption pick it (:meth:`release_last_held_over`);
        ``cacheable`` as for :meth:`free` in that case.
        """
        table = self.tables.get(req.index)
        n_content = self.num_hashed.get(req.index, 0)
        before = self.pool.num_free
        self.free(req)
        if table is not None:  # reversed by free(): in eviction order
            self.held_over.append(HeldOver(table, n_content, rank, cacheable, req))
            self.held_over_free += self.pool.num_free - before

    def _reacquire(self) -> None:
        """Hold the held-over blocks again, exactly as before their release: the newest
        release is undone first (nothing took or freed blocks at the queue's tail since)."""
        pool = self.pool
        for held in reversed(self.held_over):
            pool.reacquire(held.blocks, held.n_content)
        self.held_over_free = 0
        self._reacquired = True

    def release_last_held_over(self) -> Request:
        """The newest request held over is preempted (vLLM's running tail; its blocks are
        held, since an allocation failed): its blocks are freed now, before the others.
        Returns that request."""
        table, n_content, _rank, cacheable, req = self.held_over.pop()
        if not self._reacquired:
            raise AssertionError("a held-over request preempted while its blocks are free")
        if cacheable >= 0 and n_content:
            # (table in eviction order: block j of the request is entry len - 1 - j)
            self._uncache_tail(table[::-1], n_content, cacheable // self.block_size)
        self.pool.release(table)
        if not self.held_over:
            self._reacquired = False
        return req

    def end_held_over(self) -> None:
        """The next batch is formed: the held-over blocks are free from now on, in the
        order vLLM frees them (its requests in batch order, each last block first)."""
        if self._reacquired:
            release = self.pool.release
            for held in self.held_over:
                release(held.blocks)
            self._reacquired = False
        self.held_over.clear()
        self.held_over_free = 0

    # --- CPU tier ------------------------------------------------------------------
    def _load_back(self, req: Request, table: list[int], first: int, n: int) -> None:
        """Load blocks ``first .. first+n-1`` of ``req``'s prefix from the CPU tier."""
        cpu = self.cpu
        assert cpu is not None
        hashes = self._block_hashes(req, first + n)[first : first + n]
        for h in hashes:
            cpu.take(h)  # leaves the CPU before new GPU blocks may evict into it
        pool = self.pool
        blocks = pool.take_new(n)
        for b, h in zip(blocks, hashes, strict=True):
            pool.register(b, h)
        table.extend(blocks)
        t = n * self.block_transfer_us
        self.pending_transfer_us += t
        self.transfer_us += t
        per_req = self.request_transfers.get(req.index)
        if per_req is None:
            self.request_transfers[req.index] = [n, t]
        else:
            per_req[0] += n
            per_req[1] += t

    def _offload_over_threshold(self, at: int = UNSTAMPED) -> None:
        """Offload cached free blocks, LRU first, while occupancy exceeds the threshold."""
        pool = self.pool
        excess = pool.num_occupied - self.occupancy_limit  # type: ignore[attr-defined]
        if excess > 0:
            n = min(excess, len(pool.evictable))  # type: ignore[attr-defined]
            offload = pool.offload_lru  # type: ignore[attr-defined]
            for _ in range(n):
                offload(at)

    def take_transfer_time(self, now: int) -> int:
        """KV load time (µs) to add to the step starting at ``now``; resets it.

        Called once per step, when the step is priced: offloads and loads made while
        the step was formed are stamped with ``now`` (thrashing is judged then).
        """
        cpu = self.cpu
        if cpu is None:
            return 0
        if self.defer_stores:
            self.flush_stores()
        cpu.stamp(now)
        t = self.pending_transfer_us
        self.pending_transfer_us = 0
        return t

    def flush_stores(self) -> None:
        """Store the blocks the step's requests computed, as vLLM's offloading connector
        does once a step is formed (``_get_reqs_to_store``): requests admitted in the
        step first, then the running ones; each request's new blocks are one batch,
        all or none (:meth:`CpuTier.store_batch`; entries stored or read in this step
        are not evicted for it), and a batch that stored something touches the
        request's blocks. A refused batch is tried again at every later step while the
        request holds its blocks (vLLM retries it whenever the request is scheduled; a
        stepper does not fast-forward meanwhile)."""
        cpu = self.cpu
        assert cpu is not None
        entries = cpu.entries
        stored_upto = self._stored_upto
        refused = self.stores_refused
        running = {**refused, **self._stores_running} if refused else self._stores_running
        for queue in (self._stores_new, running):
            for idx, req in queue.items():
                full = self.num_hashed.get(idx, 0)
                start = stored_upto.get(idx, 0)
                if full <= start:
                    refused.pop(idx, None)
                    continue
                hashes = self._block_hashes(req, full)
                new = [h for h in hashes[start:full] if h not in entries]
                if new and not cpu.store_batch(new):
                    refused[idx] = req
                    continue
                refused.pop(idx, None)
                stored_upto[idx] = full
                if new:
                    cpu.touch(hashes[:full])
        self._stores_new.clear()
        self._stores_running.clear()

    def _forget_stores(self, idx: int) -> None:
        """A request that leaves (finished, preempted) has no stores pending."""
        self._stores_new.pop(idx, None)
        self._stores_running.pop(idx, None)
        self.stores_refused.pop(idx, None)
        self._stored_upto.pop(idx, None)

    def held_blocks(self, req: Request) -> int:
        table = self.tables.get(req.index)
        return len(table) if table is not None else 0

    def clear(self) -> None:
        """Forget every cached block, on the GPU and in the CPU tier: a server process
        started anew on this instance's GPUs (an autoscaled replica coming back) has an
        empty cache. Counters are kept. The instance must hold no blocks."""
        if self.tables or self.lazy_blocks or self.pool.num_used:
            raise RuntimeError("clear() on a KV cache that holds blocks")
        num_blocks, block_size = self.pool.num_blocks, self.pool.block_size
        if self.cpu is not None:
            self.cpu.clear()
            self.pool = TieredBlockPool(num_blocks, block_size, self.cpu)
        else:
            self.pool = BlockPool(num_blocks, block_size)
        self.num_hashed.clear()
        self._stores_new.clear()
        self._stores_running.clear()
        self.stores_refused.clear()
        self._stored_upto.clear()

    def check_invariants(self) -> None:
        """KV conservation: references equal the block tables' holdings (INV-4)."""
        self.pool.check_invariants()
        counts = [0] * self.pool.num_blocks
        for table in (*self.tables.values(), self.lazy_blocks):
            for b in table:
                counts[b] += 1
        assert counts == self.pool.ref_cnt, "reference counts differ from block tables"
        if self.cpu is not None:
            occupied = self.pool.num_occupied  # type: ignore[attr-defined]
            assert occupied <= self.occupancy_limit or not self.pool.evictable, (  # type: ignore[attr-defined]
                "occupancy above the offload threshold with cached free blocks left"
            )
