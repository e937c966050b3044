"""Paged KV block manager of one simulated rank: refcounted blocks, prefix cache, LRU eviction.

A block slot is in one of three states:
  * active: held by at least one request. A *full* active block is identified by its
    sequence hash and shared by every request with the same prefix (refcount); a
    *private* block (a partial last block, or one reserved for tokens not yet computed)
    belongs to one request and has no identity yet.
  * inactive: a full block no request holds; it stays reusable (the prefix cache) until it
    is evicted, least recently released first.
  * free: never used or evicted.

KV events follow Dynamo's schema: `stored` only when a block's hash enters the cache fresh
(reusing a cached block emits nothing) and `removed` when a cached block is evicted.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from dynamo.protocols.kv_events import KvCacheEvent, KvRemoved, KvStored, StoredBlock

EventCallback = Callable[[KvCacheEvent], None]


class KvCacheStateError(RuntimeError):
    """The cache was asked to release or reuse blocks it does not hold (an engine bug)."""


class KvBlockManager:
    """Block accounting for one rank; all methods are O(blocks touched), never O(cache)."""

    __slots__ = (
        "_active",
        "_dp_rank",
        "_event_ids",
        "_inactive",
        "_on_event",
        "_private",
        "block_size",
        "enable_prefix_caching",
        "num_blocks",
    )

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        *,
        enable_prefix_caching: bool = True,
        dp_rank: int = 0,
        on_event: EventCallback | None = None,
        event_ids: Iterator[int] | None = None,
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._dp_rank = dp_rank
        self._on_event = on_event
        self._event_ids = event_ids if event_ids is not None else itertools.count()
        self._active: dict[int, int] = {}  # sequence hash -> refcount
        self._inactive: OrderedDict[int, None] = OrderedDict()  # least recently released first
        self._private = 0

    # --- occupancy -------------------------------------------------------------------
    @property
    def active_blocks(self) -> int:
        """Slots held by requests (shared full blocks counted once, plus private ones)."""
        return len(self._active) + self._private

    @property
    def inactive_blocks(self) -> int:
        return len(self._inactive)

    @property
    def free_blocks(self) -> int:
        return self.num_blocks - self.active_blocks - len(self._inactive)

    @property
    def available_blocks(self) -> int:
        """Slots a new allocation may take: free ones plus evictable cached ones."""
        return self.num_blocks - self.active_blocks

    @property
    def private_blocks(self) -> int:
        return self._private

    def refcount(self, seq_hash: int) -> int:
        return self._active.get(seq_hash, 0)

    # --- prefix lookup ---------------------------------------------------------------
    def cached_prefix(self, seq_hashes: Sequence[int], max_blocks: int) -> tuple[int, int]:
        """(leading blocks of `seq_hashes` in the cache, how many of those are inactive)."""
        if not self.enable_prefix_caching:
            return 0, 0
        hits = inactive = 0
        for h in itertools.islice(seq_hashes, max(0, max_blocks)):
            if h in self._active:
                hits += 1
            elif h in self._inactive:
                hits += 1
                inactive += 1
            else:
                break
        return hits, inactive

    def acquire_cached(self, seq_hashes: Sequence[int]) -> None:
        """Take a reference on blocks `cached_prefix` found (no event: nothing new is stored)."""
        for h in seq_hashes:
            self._take(h)

    def _take(self, seq_hash: int) -> None:
        count = self._active.get(seq_hash)
        if count is not None:
            self._active[seq_hash] = count + 1
        elif seq_hash in self._inactive:
            del self._inactive[seq_hash]
            self._active[seq_hash] = 1
        else:
            raise KvCacheStateError(f"block {seq_hash:#x} is not cached")

    # --- allocation ------------------------------------------------------------------
    def allocate(self, n: int) -> bool:
        """Reserve `n` private slots, evicting cached blocks LRU if needed; False if full."""
        if n <= 0:
            return True
        if n > self.available_blocks:
            return False
        shortfall = n - self.free_blocks
        if shortfall > 0:
            evicted = [self._inactive.popitem(last=False)[0] for _ in range(shortfall)]
            self._emit(KvRemoved(tuple(evicted)))
        self._private += n
        return True

    def release_private(self, n: int) -> None:
        if n < 0 or n > self._private:
            raise KvCacheStateError(f"releasing {n} private blocks, {self._private} held")
        self._private -= n

    def commit(self, parent_hash: int | None, blocks: Sequence[tuple[int, int]]) -> None:
        """Turn one private slot per `(sequence hash, local hash)` into a full, shared block.

        A hash already cached is reused (its slot is given back, no event); consecutive fresh
        hashes go out as one `stored` event whose parent is the block before them.
        """
        if len(blocks) > self._private:
            raise KvCacheStateError(f"committing {len(blocks)} blocks, {self._private} private")
        fresh: list[StoredBlock] = []
        fresh_parent = parent_hash
        prev = parent_hash
        for seq_hash, local_hash in blocks:
            if seq_hash in self._active or seq_hash in self._inactive:
                self._flush_stored(fresh_parent, fresh)
                fresh = []
                self._take(seq_hash)
                self._private -= 1
            else:
                if not fresh:
                    fresh_parent = prev
                fresh.append(StoredBlock(block_hash=seq_hash, tokens_hash=local_hash))
                self._active[seq_hash] = 1
                self._private -= 1
            prev = seq_hash
        self._flush_stored(fresh_parent, fresh)

    def release(self, seq_hashes: Sequence[int]) -> None:
        """Drop one reference on each block; unreferenced blocks become cached (or free).

        Blocks are released last to first, so a sequence's tail is evicted before its head.
        """
        for h in reversed(seq_hashes):
            count = self._active.get(h)
            if count is None:
                raise KvCacheStateError(f"block {h:#x} released but not active")
            if count > 1:
                self._active[h] = count - 1
                continue
            del self._active[h]
            if self.enable_prefix_caching:
                self._inactive[h] = None
            else:
                self._emit(KvRemoved((h,)))

    # --- events ----------------------------------------------------------------------
    def _flush_stored(self, parent: int | None, fresh: list[StoredBlock]) -> None:
        if fresh:
            self._emit(KvStored(parent_hash=parent, blocks=tuple(fresh)))

    def _emit(self, data: KvStored | KvRemoved) -> None:
        if self._on_event is not None:
            self._on_event(KvCacheEvent(next(self._event_ids), data, self._dp_rank))

    def cached_block_hashes(self) -> set[int]:
        """Every full block hash held or cached (O(cache); for tests and debugging)."""
        return set(self._active) | set(self._inactive)

    # --- checking --------------------------------------------------------------------
    def consistency_errors(self) -> list[str]:
        """Violated invariants (O(cache); for tests and debugging)."""
        errors = []
        if self._private < 0:
            errors.append(f"negative private count {self._private}")
        if self.free_blocks < 0:
            errors.append(f"over capacity: {self.active_blocks} active + {self.inactive_blocks}")
        both = self._active.keys() & self._inactive.keys()
        if both:
            errors.append(f"{len(both)} blocks both active and cached")
        bad = [h for h, c in self._active.items() if c < 1]
        if bad:
            errors.append(f"{len(bad)} active blocks with refcount < 1")
        return errors
