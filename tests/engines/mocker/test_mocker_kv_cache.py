"""KvBlockManager: refcounts, the LRU prefix cache, and the KV events it emits."""

from __future__ import annotations

import pytest

from dynamo.engines.mocker.kv_cache import KvBlockManager, KvCacheStateError
from dynamo.protocols.kv_events import KvCacheEvent, KvRemoved, KvStored, StoredBlock


def manager(num_blocks: int = 4, **kwargs: object) -> tuple[KvBlockManager, list[KvCacheEvent]]:
    events: list[KvCacheEvent] = []
    return KvBlockManager(num_blocks, 4, on_event=events.append, **kwargs), events  # type: ignore[arg-type]


def store(kv: KvBlockManager, parent: int | None, hashes: list[int]) -> None:
    assert kv.allocate(len(hashes))
    kv.commit(parent, [(h, h + 1000) for h in hashes])


def test_fresh_blocks_are_stored_once_with_their_parent() -> None:
    kv, events = manager()
    store(kv, None, [1, 2])
    assert [e.data for e in events] == [
        KvStored(None, (StoredBlock(1, 1001), StoredBlock(2, 1002)))
    ]
    assert kv.active_blocks == 2 and kv.free_blocks == 2
    # a second holder of the same prefix shares the blocks and emits nothing
    store(kv, None, [1, 2])
    assert len(events) == 1
    assert kv.refcount(1) == 2 and kv.active_blocks == 2 and kv.private_blocks == 0


def test_a_run_after_a_reused_block_names_the_reused_block_as_parent() -> None:
    kv, events = manager(num_blocks=8)
    store(kv, None, [1])
    store(kv, None, [1, 2, 3])
    assert [e.data for e in events][1] == KvStored(1, (StoredBlock(2, 1002), StoredBlock(3, 1003)))


def test_released_blocks_stay_cached_until_evicted_lru_tail_first() -> None:
    kv, events = manager(num_blocks=4)
    store(kv, None, [1, 2])
    kv.release([1, 2])
    assert kv.active_blocks == 0 and kv.inactive_blocks == 2
    assert kv.cached_prefix([1, 2, 9], max_blocks=3) == (2, 2)
    store(kv, None, [5, 6])
    assert kv.free_blocks == 0
    assert kv.allocate(1)  # evicts the least recently released: the tail block 2
    assert events[-1].data == KvRemoved((2,))
    assert kv.cached_prefix([1, 2], max_blocks=2) == (1, 1)


def test_reusing_a_cached_block_takes_it_out_of_the_lru_without_an_event() -> None:
    kv, events = manager(num_blocks=2)
    store(kv, None, [1, 2])
    kv.release([1, 2])
    kv.acquire_cached([1])
    assert len(events) == 1 and kv.refcount(1) == 1 and kv.inactive_blocks == 1
    assert kv.allocate(1)  # only block 2 is evictable
    assert events[-1].data == KvRemoved((2,))
    assert not kv.allocate(1)  # 1 is held, 1 private: full


def test_committing_a_hash_already_cached_reuses_it_and_frees_the_slot() -> None:
    kv, events = manager(num_blocks=4)
    store(kv, None, [1])
    kv.release([1])
    store(kv, None, [1])
    assert len(events) == 1
    assert kv.inactive_blocks == 0 and kv.active_blocks == 1 and kv.private_blocks == 0


def test_event_ids_are_consecutive_and_carry_the_rank() -> None:
    kv, events = manager(num_blocks=2, dp_rank=3)
    for i in range(5):
        store(kv, None, [10 * i, 10 * i + 1])
        kv.release([10 * i, 10 * i + 1])
    assert [e.event_id for e in events] == list(range(len(events)))
    assert {e.dp_rank for e in events} == {3}
    removed = [h for e in events if isinstance(e.data, KvRemoved) for h in e.data.block_hashes]
    assert removed == [1, 0, 11, 10, 21, 20, 31, 30]


def test_allocation_beyond_capacity_fails_without_side_effects() -> None:
    kv, events = manager(num_blocks=3)
    store(kv, None, [1, 2])
    kv.release([1, 2])
    assert not kv.allocate(4)
    assert kv.inactive_blocks == 2 and len(events) == 1


def test_without_prefix_caching_nothing_is_found_and_freed_blocks_are_dropped() -> None:
    kv, events = manager(num_blocks=2, enable_prefix_caching=False)
    store(kv, None, [1])
    kv.release([1])
    assert kv.cached_prefix([1], max_blocks=1) == (0, 0)
    assert kv.inactive_blocks == 0 and kv.free_blocks == 2
    assert isinstance(events[-1].data, KvRemoved)


def test_misuse_is_reported_not_absorbed() -> None:
    kv, _ = manager()
    with pytest.raises(KvCacheStateError):
        kv.release([42])
    with pytest.raises(KvCacheStateError):
        kv.acquire_cached([42])
    with pytest.raises(KvCacheStateError):
        kv.release_private(1)
    with pytest.raises(KvCacheStateError):
        kv.commit(None, [(1, 1)])
    store(kv, None, [1])
    kv.release([1])
    with pytest.raises(KvCacheStateError, match="not active"):
        kv.release([1])  # double free
    assert kv.consistency_errors() == []
