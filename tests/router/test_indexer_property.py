"""The flat indexer agrees with a naive, obviously-correct model over random event streams."""

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.protocols.kv_events import (
    KvCacheEvent,
    KvCleared,
    KvRemoved,
    KvStored,
    RouterEvent,
    StoredBlock,
)
from dynamo.router.indexer import KvIndexer


class NaiveIndex:
    """Each worker key maps external hash -> path of tokens hashes from the root."""

    def __init__(self):
        self.paths: dict[tuple[int, int], dict[int, tuple[int, ...]]] = {}
        self.last_id: dict[tuple[int, int], int] = {}

    def apply(self, ev: RouterEvent) -> None:
        key = (ev.worker_id, ev.event.dp_rank)
        last = self.last_id.get(key)
        if last is not None and ev.event.event_id != last + 1:
            self.paths[key] = {}
        self.last_id[key] = ev.event.event_id
        paths = self.paths.setdefault(key, {})
        data = ev.event.data
        if isinstance(data, KvStored):
            if data.parent_hash is None:
                base: tuple[int, ...] = ()
            elif data.parent_hash in paths:
                base = paths[data.parent_hash]
            else:
                return
            for block in data.blocks:
                base = (*base, block.tokens_hash)
                paths[block.block_hash] = base
        elif isinstance(data, KvRemoved):
            for h in data.block_hashes:
                paths.pop(h, None)
        else:
            paths.clear()

    def remove_worker(self, instance_id: int) -> None:
        for key in [k for k in self.paths if k[0] == instance_id]:
            del self.paths[key]
            self.last_id.pop(key, None)

    def scores(self, query: list[int]) -> dict[tuple[int, int], int]:
        out = {}
        for key, paths in self.paths.items():
            held = set(paths.values())
            n = 0
            while n < len(query) and tuple(query[: n + 1]) in held:
                n += 1
            if n:
                out[key] = n
        return out

    def sizes(self) -> dict[tuple[int, int], int]:
        return {k: len(set(p.values())) for k, p in self.paths.items() if p}


op = st.one_of(
    st.tuples(
        st.just("stored"),
        st.integers(0, 2),  # worker
        st.integers(0, 1),  # dp rank
        st.one_of(st.none(), st.integers(0, 11)),  # parent external hash
        st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2)), min_size=1, max_size=4),
        st.sampled_from([1, 1, 1, 1, 1, 1, 2, 0, -3]),  # event id step
    ),
    st.tuples(
        st.just("removed"),
        st.integers(0, 2),
        st.integers(0, 1),
        st.lists(st.integers(0, 11), min_size=1, max_size=3),
        st.sampled_from([1, 1, 1, 1, 3]),
    ),
    st.tuples(st.just("cleared"), st.integers(0, 2), st.integers(0, 1), st.just(1)),
    st.tuples(st.just("remove_worker"), st.integers(0, 2)),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(op, max_size=40),
    queries=st.lists(st.lists(st.integers(0, 2), max_size=5), min_size=1, max_size=6),
)
def test_fast_indexer_matches_naive_model(ops, queries):
    fast, naive = KvIndexer(), NaiveIndex()
    next_id: dict[tuple[int, int], int] = {}
    for o in ops:
        if o[0] == "remove_worker":
            fast.remove_worker(o[1])
            naive.remove_worker(o[1])
            for key in [k for k in next_id if k[0] == o[1]]:
                del next_id[key]
            continue
        worker, rank = o[1], o[2]
        step = o[-1]
        eid = max(0, next_id.get((worker, rank), 0) + step - 1)
        next_id[(worker, rank)] = eid + 1
        if o[0] == "stored":
            data = KvStored(o[3], tuple(StoredBlock(e, t) for e, t in o[4]))
        elif o[0] == "removed":
            data = KvRemoved(tuple(o[3]))
        else:
            data = KvCleared()
        ev = RouterEvent(worker, KvCacheEvent(eid, data, rank))
        fast.apply_event(ev)
        naive.apply(ev)
        for q in queries:
            assert fast.find_matches(q).scores == naive.scores(q), (q, ev)
        assert {k: v for k, v in fast.tree_sizes().items() if v} == naive.sizes()
    assert fast.size == sum(naive.sizes().values())
