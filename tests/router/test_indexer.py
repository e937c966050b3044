from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import (
    KvCacheEvent,
    KvCleared,
    KvRemoved,
    KvStored,
    RouterEvent,
    StoredBlock,
)
from dynamo.router.indexer import KvIndexer, OverlapScores


def stored(worker, event_id, parent, blocks, dp_rank=0):
    """blocks: (external hash, tokens hash) pairs."""
    data = KvStored(parent, tuple(StoredBlock(e, t) for e, t in blocks))
    return RouterEvent(worker, KvCacheEvent(event_id, data, dp_rank))


def removed(worker, event_id, hashes, dp_rank=0):
    return RouterEvent(worker, KvCacheEvent(event_id, KvRemoved(tuple(hashes)), dp_rank))


def cleared(worker, event_id, dp_rank=0):
    return RouterEvent(worker, KvCacheEvent(event_id, KvCleared(), dp_rank))


def test_stored_chain_and_leading_match():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(101, 11), (102, 12)]))
    idx.apply_event(stored(1, 1, 102, [(103, 13)]))
    idx.apply_event(stored(2, 0, None, [(201, 11)]))
    assert idx.find_matches([11, 12, 13, 14]) == OverlapScores(
        {(1, 0): 3, (2, 0): 1}, {(1, 0): 3, (2, 0): 1}
    )
    assert idx.find_matches([11, 99, 13]).scores == {(1, 0): 1, (2, 0): 1}
    assert idx.find_matches([12]).scores == {}  # 12 only exists below 11
    assert idx.find_matches([]).scores == {}
    assert (idx.size, idx.num_nodes) == (4, 3)
    assert idx.stats.events_applied == 3


def test_match_counts_only_leading_blocks():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11), (2, 12), (3, 13)]))
    idx.apply_event(stored(2, 0, None, [(1, 11), (2, 12), (3, 13)]))
    idx.apply_event(removed(2, 1, [2]))  # worker 2 lost its middle block
    assert idx.find_matches([11, 12, 13]).scores == {(1, 0): 3, (2, 0): 1}
    assert idx.tree_size((2, 0)) == 2


def test_removed_and_unknown_removal():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11), (2, 12)]))
    idx.apply_event(removed(1, 1, [2, 77]))
    assert idx.find_matches([11, 12]).scores == {(1, 0): 1}
    assert idx.stats.unknown_removals == 1
    idx.apply_event(removed(1, 2, [1]))
    assert idx.find_matches([11]).scores == {}
    assert (idx.size, idx.num_nodes) == (0, 0)


def test_cleared_drops_only_that_worker():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11)]))
    idx.apply_event(stored(2, 0, None, [(5, 11)]))
    idx.apply_event(cleared(1, 1))
    assert idx.find_matches([11]).scores == {(2, 0): 1}
    assert idx.tree_sizes() == {(1, 0): 0, (2, 0): 1}


def test_dp_ranks_are_separate_workers():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11)], dp_rank=0))
    idx.apply_event(stored(1, 0, None, [(1, 11), (2, 12)], dp_rank=1))
    assert idx.find_matches([11, 12]).scores == {(1, 0): 1, (1, 1): 2}


def test_remove_worker_drops_every_rank_and_its_blocks():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11)], dp_rank=0))
    idx.apply_event(stored(1, 0, None, [(1, 11)], dp_rank=1))
    idx.apply_event(stored(2, 0, None, [(1, 11), (2, 12)]))
    idx.remove_worker(1)
    assert idx.find_matches([11, 12]).scores == {(2, 0): 2}
    assert idx.workers() == [(2, 0)]
    assert idx.size == 2
    # a new worker reuses the freed slot and starts clean
    idx.apply_event(stored(3, 5, None, [(9, 11)]))
    assert idx.find_matches([11, 12]).scores == {(2, 0): 2, (3, 0): 1}


def test_missing_parent_is_skipped_and_counted():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, 999, [(1, 11)]))
    assert idx.stats.missing_parents == 1
    assert idx.size == 0


def test_event_gap_drops_worker_blocks_then_resyncs():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11), (2, 12)]))
    idx.apply_event(stored(2, 0, None, [(1, 11)]))
    # events 1..2 of worker 1 are lost (say, a removal of block 2): its view is stale
    idx.apply_event(stored(1, 3, None, [(7, 21)]))
    assert idx.stats.gaps == 1
    assert idx.find_matches([11, 12]).scores == {(2, 0): 1}
    assert idx.find_matches([21]).scores == {(1, 0): 1}
    # a child of a block dropped by the gap cannot be placed: skipped, not misplaced
    idx.apply_event(stored(1, 4, 2, [(3, 13)]))
    assert idx.stats.missing_parents == 1
    # later events rebuild the state
    idx.apply_event(stored(1, 5, None, [(1, 11), (2, 12)]))
    assert idx.find_matches([11, 12]).scores == {(1, 0): 2, (2, 0): 1}
    assert idx.stats.gaps == 1


def test_restarted_worker_event_ids_go_back():
    idx = KvIndexer()
    for i in range(5):
        idx.apply_event(stored(1, i, None, [(i, 100 + i)]))
    idx.apply_event(stored(1, 0, None, [(50, 11)]))  # restarted: numbering begins again
    assert idx.stats.resets == 1
    assert idx.tree_sizes() == {(1, 0): 1}
    assert idx.find_matches([100]).scores == {}
    assert idx.find_matches([11]).scores == {(1, 0): 1}


def test_first_event_of_a_worker_may_have_any_id():
    idx = KvIndexer()
    idx.apply_event(stored(1, 41, None, [(1, 11)]))
    idx.apply_event(stored(1, 42, 1, [(2, 12)]))
    assert (idx.stats.gaps, idx.stats.resets) == (0, 0)
    assert idx.find_matches([11, 12]).scores == {(1, 0): 2}


def test_restore_same_external_hash_is_idempotent_and_remap_moves_it():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11)]))
    idx.apply_event(stored(1, 1, None, [(1, 11)]))
    assert idx.size == 1
    idx.apply_event(stored(1, 2, None, [(1, 22)]))  # the engine reused id 1 for other content
    assert idx.find_matches([11]).scores == {}
    assert idx.find_matches([22]).scores == {(1, 0): 1}
    assert idx.size == 1


def test_two_external_hashes_for_one_block_need_both_removed():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11)]))
    idx.apply_event(stored(1, 1, None, [(2, 11)]))
    idx.apply_event(removed(1, 2, [1]))
    assert idx.find_matches([11]).scores == {(1, 0): 1}
    idx.apply_event(removed(1, 3, [2]))
    assert idx.find_matches([11]).scores == {}


def test_find_matches_for_tokens_uses_shared_hashing():
    tokens = list(range(40))
    local = block_hashes(tokens, 16)
    seqs = sequence_hashes(local)
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(seqs[0], local[0]), (seqs[1], local[1])]))
    assert idx.find_matches_for_tokens(tokens, 16).scores == {(1, 0): 2}
    assert idx.find_matches_seq(seqs).scores == {(1, 0): 2}


def test_dump_events_replays_to_the_same_index():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11), (2, 12)]))
    idx.apply_event(stored(1, 1, 2, [(3, 13)]))
    idx.apply_event(stored(1, 2, 1, [(4, 14)]))
    idx.apply_event(stored(2, 0, None, [(8, 11)]))
    dump = idx.dump_events()
    assert [(e.worker_id, e.event.data) for e in dump] == [
        (1, KvStored(None, (StoredBlock(1, 11),))),
        (1, KvStored(1, (StoredBlock(2, 12),))),
        (1, KvStored(1, (StoredBlock(4, 14),))),
        (1, KvStored(2, (StoredBlock(3, 13),))),
        (2, KvStored(None, (StoredBlock(8, 11),))),
    ]
    replay = KvIndexer()
    for ev in dump:
        replay.apply_event(ev)
    assert (replay.stats.gaps, replay.stats.resets, replay.stats.missing_parents) == (0, 0, 0)
    for query in ([11, 12, 13], [11, 14], [11]):
        assert replay.find_matches(query) == idx.find_matches(query)


def test_dump_skips_blocks_cut_off_from_the_root():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, None, [(1, 11), (2, 12)]))
    idx.apply_event(removed(1, 1, [1]))
    assert idx.dump_events() == []
    assert idx.tree_size((1, 0)) == 1
