from dynamo.protocols.hashing import sequence_hashes
from dynamo.router.approx import ApproxIndexer
from dynamo.router.indexer import KvIndexer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(**kwargs):
    clock = Clock()
    idx = KvIndexer()
    return clock, idx, ApproxIndexer(idx, clock=clock, **kwargs)


def record(approx, key, local):
    approx.record(key, local, sequence_hashes(local))


def test_recorded_blocks_match_until_ttl():
    clock, idx, approx = setup(ttl_s=120.0)
    record(approx, (1, 0), [11, 12, 13])
    assert idx.find_matches([11, 12, 13]).scores == {(1, 0): 3}
    clock.now += 119.9
    assert approx.expire() == 0
    clock.now += 0.1
    assert approx.expire() == 3
    assert idx.find_matches([11, 12, 13]).scores == {}
    assert (idx.size, approx.stats.expired) == (0, 3)


def test_rerouting_a_prefix_refreshes_its_expiry():
    clock, idx, approx = setup(ttl_s=10.0)
    record(approx, (1, 0), [11, 12, 13])
    clock.now += 6
    record(approx, (1, 0), [11, 12])  # the shared prefix is routed there again
    clock.now += 5  # 11 s after the first, 5 s after the second
    approx.expire()
    assert idx.find_matches([11, 12, 13]).scores == {(1, 0): 2}
    clock.now += 5
    approx.expire()
    assert idx.size == 0


def test_size_bound_prunes_to_target_soonest_expiry_and_deepest_first():
    clock, idx, approx = setup(ttl_s=100.0, max_tree_size=10, prune_target_ratio=0.5)
    record(approx, (1, 0), [1, 2, 3, 4])  # expires at +100
    clock.now += 1
    record(approx, (2, 0), [1, 2, 3, 4])  # expires at +101
    clock.now += 1
    assert idx.size == 8
    record(approx, (3, 0), [7, 8, 9])  # 11 > 10: prune down to 5
    assert idx.size == 5
    assert approx.stats.pruned == 6
    # worker 1 went first (all of it), then worker 2's two deepest blocks
    assert idx.find_matches([1, 2, 3, 4]).scores == {(2, 0): 2}
    assert idx.find_matches([7, 8, 9]).scores == {(3, 0): 3}


def test_removed_worker_entries_are_forgotten():
    clock, idx, approx = setup(ttl_s=5.0)
    record(approx, (1, 0), [1, 2])
    idx.remove_worker(1)
    approx.remove_worker(1)
    clock.now += 10
    assert approx.expire() == 0
    assert idx.size == 0


def test_heap_is_compacted_when_refreshes_pile_up():
    clock, idx, approx = setup(ttl_s=50.0)
    for _ in range(600):
        clock.now += 0.01
        record(approx, (1, 0), [1, 2, 3])
    assert len(approx._heap) <= 2 * 3 + 1024 + 3
    clock.now += 50
    assert approx.expire() == 3
    assert idx.size == 0


def test_empty_request_records_nothing():
    _, idx, approx = setup()
    approx.record((1, 0), [], [])
    assert idx.size == 0
