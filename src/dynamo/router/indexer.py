"""Prefix index of which worker holds which KV blocks, fed by the workers' KV events.

Dynamo keeps a radix tree whose nodes are block-content hashes along a path from the root.
A node is fully identified by the chained *sequence hash* of that path
(`dynamo.protocols.hashing.sequence_hashes`), so the tree is stored flat here:

* `_holders[seq_hash]` is a bitmask of the workers holding that block (one bit per worker key),
  `_parent[seq_hash]` its parent's sequence hash (`_ROOT` at the root) and `_tokens[seq_hash]`
  its content hash (both for snapshots);
* per worker key, `_lookup[key][external_block_hash] = seq_hash` (the engine's own hash lets a
  `stored` event name its parent and a `removed` event name its blocks) and
  `_held[key][seq_hash] = refcount`.

A lookup walks the request's sequence hashes with one dict probe and one integer AND per block,
and a worker's score is the number of *leading* blocks of the request it holds, which is what
an engine's prefix cache can reuse.

Events are numbered per worker (and dp rank). A gap in the numbering means events were lost,
a number that goes backwards means the worker restarted: either way the worker's blocks are
dropped and rebuilt from the events that follow, so a lost `removed` event cannot leave stale
blocks in the index for ever.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import xxhash

from dynamo.protocols.hashing import XXH3_SEED, block_hashes, sequence_hashes
from dynamo.protocols.kv_events import (
    KvCacheEvent,
    KvCleared,
    KvRemoved,
    KvStored,
    RouterEvent,
    StoredBlock,
)

_ROOT = -1  # parent of a first block (sequence hashes are unsigned)
_PAIR = struct.Struct("<QQ")

WorkerKey = tuple[int, int]
"""(instance_id, dp_rank): the unit that holds a KV cache."""


@dataclass(frozen=True, slots=True)
class OverlapScores:
    """Result of a lookup: leading blocks matched per worker, and blocks held per worker."""

    scores: dict[WorkerKey, int]
    tree_sizes: dict[WorkerKey, int]


@dataclass(slots=True)
class IndexerStats:
    events_applied: int = 0
    gaps: int = 0  # event ids jumped: events were lost, the worker's blocks were dropped
    resets: int = 0  # event ids went backwards: the worker restarted, its blocks were dropped
    missing_parents: int = 0  # `stored` events skipped because the parent block is unknown
    unknown_removals: int = 0  # `removed` block hashes the index did not hold


class KvIndexer:
    """Flat radix index over (worker, block) pairs; see the module docstring."""

    def __init__(self, *, seed: int = XXH3_SEED) -> None:
        self._seed = seed
        # Only int -> int dicts: the garbage collector never scans the million nodes.
        self._holders: dict[int, int] = {}
        self._parent: dict[int, int] = {}
        self._tokens: dict[int, int] = {}
        self._lookup: dict[WorkerKey, dict[int, int]] = {}
        self._held: dict[WorkerKey, dict[int, int]] = {}
        self._bit: dict[WorkerKey, int] = {}
        self._key_of_bit: list[WorkerKey | None] = []
        self._free_bits: list[int] = []
        self._last_event_id: dict[WorkerKey, int] = {}
        self._size = 0
        self.stats = IndexerStats()

    # --- queries ---------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of (worker, block) pairs indexed."""
        return self._size

    @property
    def num_nodes(self) -> int:
        """Number of distinct blocks (tree nodes) held by at least one worker."""
        return len(self._holders)

    def workers(self) -> list[WorkerKey]:
        return list(self._held)

    def tree_size(self, key: WorkerKey) -> int:
        held = self._held.get(key)
        return len(held) if held is not None else 0

    def tree_sizes(self) -> dict[WorkerKey, int]:
        return {key: len(held) for key, held in self._held.items()}

    def find_matches_for_tokens(self, token_ids: Sequence[int], block_size: int) -> OverlapScores:
        local = block_hashes(token_ids, block_size, seed=self._seed)
        return self.find_matches(local)

    def find_matches(self, local_hashes: Sequence[int]) -> OverlapScores:
        """Per worker, the number of leading blocks of `local_hashes` it holds."""
        return self.find_matches_seq(sequence_hashes(local_hashes, seed=self._seed))

    def find_matches_seq(self, seq_hashes: Sequence[int]) -> OverlapScores:
        """Like `find_matches`, from the request's chained sequence hashes."""
        scores: dict[WorkerKey, int] = {}
        holders_get = self._holders.get
        active = -1  # every worker is still matching
        for depth, seq in enumerate(seq_hashes):
            holders = holders_get(seq, 0)
            still = active & holders
            if still != active:
                if depth:
                    self._record(scores, active & ~holders, depth)
                active = still
                if not active:
                    break
        else:
            if seq_hashes:
                self._record(scores, active, len(seq_hashes))
        return OverlapScores(scores, self.tree_sizes())

    def _record(self, scores: dict[WorkerKey, int], mask: int, depth: int) -> None:
        key_of_bit = self._key_of_bit
        while mask:
            low = mask & -mask
            key = key_of_bit[low.bit_length() - 1]
            if key is not None:
                scores[key] = depth
            mask ^= low

    # --- events ----------------------------------------------------------------------------
    def apply_event(self, event: RouterEvent) -> None:
        """Apply one worker event, after checking its number against the last one seen."""
        ev: KvCacheEvent = event.event
        key = (event.worker_id, ev.dp_rank)
        last = self._last_event_id.get(key)
        if last is not None:
            if ev.event_id <= last:
                self.stats.resets += 1
                self.clear_worker(key)
            elif ev.event_id != last + 1:
                self.stats.gaps += 1
                self.clear_worker(key)
        self._last_event_id[key] = ev.event_id
        data = ev.data
        if isinstance(data, KvStored):
            self.store_blocks(key, data.parent_hash, data.blocks)
        elif isinstance(data, KvRemoved):
            self.remove_blocks(key, data.block_hashes)
        elif isinstance(data, KvCleared):
            self.clear_worker(key)
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"unknown KV event data {data!r}")
        self.stats.events_applied += 1

    def store_blocks(
        self, key: WorkerKey, parent_hash: int | None, blocks: Sequence[StoredBlock]
    ) -> bool:
        """Add `blocks` (a chain below the worker's block `parent_hash`, or the root).

        Returns False, and changes nothing, when the parent block is unknown.
        """
        lookup = self._lookup.get(key)
        if lookup is None:
            lookup = self._add_key(key)
        held = self._held[key]
        parent: int | None = None
        if parent_hash is not None:
            parent = lookup.get(parent_hash)
            if parent is None:
                self.stats.missing_parents += 1
                return False
        bit = 1 << self._bit[key]
        masks, parents, contents = self._holders, self._parent, self._tokens
        lookup_get, held_get, masks_get = lookup.get, held.get, masks.get
        pack, xxh3, seed = _PAIR.pack, xxhash.xxh3_64_intdigest, self._seed
        added = 0
        for block in blocks:
            tokens_hash = block.tokens_hash
            # the chaining of `hashing.sequence_hashes`, inlined: this loop is the hot path
            seq = tokens_hash if parent is None else xxh3(pack(parent, tokens_hash), seed)
            ext = block.block_hash
            old = lookup_get(ext)
            if old != seq:
                if old is not None:
                    self._release(held, old, bit)
                lookup[ext] = seq
                count = held_get(seq, 0)
                held[seq] = count + 1
                if not count:
                    added += 1
                    mask = masks_get(seq)
                    if mask is None:
                        masks[seq] = bit
                        parents[seq] = _ROOT if parent is None else parent
                        contents[seq] = tokens_hash
                    else:
                        masks[seq] = mask | bit
            parent = seq
        self._size += added
        return True

    def remove_blocks(self, key: WorkerKey, block_hashes: Iterable[int]) -> None:
        lookup = self._lookup.get(key)
        if lookup is None:
            self.stats.unknown_removals += sum(1 for _ in block_hashes)
            return
        held = self._held[key]
        bit = 1 << self._bit[key]
        for block_hash in block_hashes:
            seq = lookup.pop(block_hash, None)
            if seq is None:
                self.stats.unknown_removals += 1
            else:
                self._release(held, seq, bit)

    def clear_worker(self, key: WorkerKey) -> None:
        """Drop every block of one worker key (a `cleared` event, a gap, a restart)."""
        held = self._held.get(key)
        if held is None:
            return
        keep = ~(1 << self._bit[key])
        masks = self._holders
        for seq in held:
            mask = masks[seq] & keep
            if mask:
                masks[seq] = mask
            else:
                del masks[seq], self._parent[seq], self._tokens[seq]
        self._size -= len(held)
        held.clear()
        self._lookup[key].clear()

    def remove_worker(self, instance_id: int) -> None:
        """Forget a worker (every dp rank) that left discovery."""
        for key in [k for k in self._held if k[0] == instance_id]:
            self.clear_worker(key)
            bit = self._bit.pop(key)
            self._key_of_bit[bit] = None
            self._free_bits.append(bit)
            del self._held[key], self._lookup[key]
        for key in [k for k in self._last_event_id if k[0] == instance_id]:
            del self._last_event_id[key]

    def _add_key(self, key: WorkerKey) -> dict[int, int]:
        if self._free_bits:
            bit = self._free_bits.pop()
            self._key_of_bit[bit] = key
        else:
            bit = len(self._key_of_bit)
            self._key_of_bit.append(key)
        self._bit[key] = bit
        self._held[key] = {}
        lookup: dict[int, int] = {}
        self._lookup[key] = lookup
        return lookup

    def _release(self, held: dict[int, int], seq: int, bit: int) -> None:
        count = held[seq]
        if count > 1:
            held[seq] = count - 1
            return
        del held[seq]
        self._size -= 1
        mask = self._holders[seq] & ~bit
        if mask:
            self._holders[seq] = mask
        else:
            del self._holders[seq], self._parent[seq], self._tokens[seq]

    # --- snapshots -------------------------------------------------------------------------
    def dump_events(self) -> list[RouterEvent]:
        """The index as `stored` events, one block each, parents first, per worker key.

        Only blocks reachable from the root through the worker's own blocks are dumped
        (the others can never match a request for that worker).
        """
        out: list[RouterEvent] = []
        for key in sorted(self._held):
            ext_of: dict[int, int] = {}
            for ext, seq in self._lookup[key].items():
                ext_of.setdefault(seq, ext)
            for seq in self._reachable_in_order(key):
                parent, tokens_hash = self._parent[seq], self._tokens[seq]
                block = StoredBlock(ext_of[seq], tokens_hash)
                stored = KvStored(None if parent == _ROOT else ext_of[parent], (block,))
                out.append(RouterEvent(key[0], KvCacheEvent(len(out), stored, key[1])))
        return out

    def _reachable_in_order(self, key: WorkerKey) -> list[int]:
        held = self._held[key]
        depth: dict[int, int] = {}
        for start in held:
            path: list[int] = []
            seq = start
            base = 0
            while seq != _ROOT and seq not in depth:
                if seq not in held:
                    base = -1  # an ancestor is missing: unreachable
                    break
                path.append(seq)
                seq = self._parent[seq]
            else:
                base = depth[seq] if seq != _ROOT else 0
            for s in reversed(path):
                base = base + 1 if base >= 0 else -1
                depth[s] = base
        reachable = [s for s, d in depth.items() if d > 0]
        reachable.sort(key=depth.__getitem__)
        return reachable
