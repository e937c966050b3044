"""Approximate mode (`--no-kv-events`): the router indexes its own routing decisions.

After each decision the request's full blocks are stored for the chosen worker as if the
worker had reported them, each (worker, block) expiring `ttl_s` after it was last routed there.
When the index grows past `max_tree_size`, the soonest-expiring blocks (deepest first among
equal expiry) are evicted down to `max_tree_size * prune_target_ratio`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynamo.protocols.kv_events import StoredBlock
from dynamo.router.indexer import KvIndexer, WorkerKey


@dataclass(slots=True)
class ApproxStats:
    expired: int = 0  # (worker, block) pairs dropped at TTL expiry
    pruned: int = 0  # (worker, block) pairs evicted by the size bound


class ApproxIndexer:
    """Feeds a `KvIndexer` from routing decisions, with TTL expiry and a size bound."""

    def __init__(
        self,
        indexer: KvIndexer,
        *,
        ttl_s: float = 120.0,
        max_tree_size: int = 2**20,
        prune_target_ratio: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_tree_size <= 0 or not 0 < prune_target_ratio <= 1:
            raise ValueError(
                f"bad approximate-mode settings: ttl_s={ttl_s}, max_tree_size={max_tree_size}, "
                f"prune_target_ratio={prune_target_ratio}"
            )
        self.indexer = indexer
        self.ttl_s = ttl_s
        self.max_tree_size = max_tree_size
        self.prune_target = int(max_tree_size * prune_target_ratio)
        self._clock = clock
        # (worker, block) -> expiry; the heap holds (expiry, -depth, seq, key) with stale
        # entries skipped lazily when their expiry no longer matches.
        self._expiry: dict[WorkerKey, dict[int, float]] = {}
        self._heap: list[tuple[float, int, int, WorkerKey]] = []
        self.stats = ApproxStats()

    def record(
        self, key: WorkerKey, local_hashes: Sequence[int], seq_hashes: Sequence[int]
    ) -> None:
        """The router sent a request with these blocks to `key`: index them, refresh TTLs."""
        now = self._clock()
        self.expire(now)
        if not seq_hashes:
            return
        blocks = [StoredBlock(s, h) for s, h in zip(seq_hashes, local_hashes, strict=True)]
        self.indexer.store_blocks(key, None, blocks)
        expires = now + self.ttl_s
        expiry = self._expiry.setdefault(key, {})
        heap = self._heap
        for depth, seq in enumerate(seq_hashes):
            expiry[seq] = expires
            heapq.heappush(heap, (expires, -depth, seq, key))
        if self.indexer.size > self.max_tree_size:
            self._prune()
        if len(heap) > 2 * self._live() + 1024:
            self._compact()

    def expire(self, now: float | None = None) -> int:
        """Drop every (worker, block) whose TTL has passed; returns how many."""
        now = self._clock() if now is None else now
        heap = self._heap
        dropped = 0
        while heap and heap[0][0] <= now:
            if self._drop(heapq.heappop(heap)):
                dropped += 1
        self.stats.expired += dropped
        return dropped

    def remove_worker(self, instance_id: int) -> None:
        """Forget a worker's expiry records (its heap entries become stale)."""
        for key in [k for k in self._expiry if k[0] == instance_id]:
            del self._expiry[key]

    def _prune(self) -> None:
        heap = self._heap
        while heap and self.indexer.size > self.prune_target:
            if self._drop(heapq.heappop(heap)):
                self.stats.pruned += 1

    def _drop(self, entry: tuple[float, int, int, WorkerKey]) -> bool:
        expires, _, seq, key = entry
        expiry = self._expiry.get(key)
        if expiry is None or expiry.get(seq) != expires:
            return False  # refreshed since, or the worker is gone
        del expiry[seq]
        self.indexer.remove_blocks(key, (seq,))
        return True

    def _live(self) -> int:
        return sum(len(e) for e in self._expiry.values())

    def _compact(self) -> None:
        """Rebuild the heap from live entries (refreshes leave stale ones behind)."""
        keep = [
            entry
            for entry in self._heap
            if (e := self._expiry.get(entry[3])) is not None and e.get(entry[2]) == entry[0]
        ]
        heapq.heapify(keep)
        self._heap = keep
