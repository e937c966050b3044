"""Dynamo's `_test_router_decisions` vector and the KV policy's end-to-end bookkeeping."""

import random

import pytest

from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import KvCacheEvent, KvStored, RouterEvent, StoredBlock
from dynamo.router.base import RouteRequest, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.policies import KvPolicy

BLOCK = 8
A, B, C, D, E, F, G = ([random.Random(i).randrange(32000) for _ in range(BLOCK)] for i in range(7))
WA, WB = 101, 202


class EngineCache:
    """What a worker publishes: stored events for the blocks of a prompt it did not hold."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.held: set[int] = set()
        self.next_id = 0

    def run(self, tokens: list[int]) -> list[RouterEvent]:
        local = block_hashes(tokens, BLOCK)
        seqs = sequence_hashes(local)
        parent = None
        new = []
        for seq, h in zip(seqs, local, strict=True):
            if seq in self.held:
                parent = seq
            else:
                new.append(StoredBlock(seq, h))
                self.held.add(seq)
        if not new:
            return []
        ev = RouterEvent(self.worker_id, KvCacheEvent(self.next_id, KvStored(parent, tuple(new))))
        self.next_id += 1
        return [ev]


DYNAMO_DEFAULTS = {"kv_overlap_score_weight": 1.0, "kv_overlap_score_credit": 1.0}


def policy(**overrides) -> KvPolicy:
    """Dynamo 1.6.1's default settings unless overridden (the vectors below are Dynamo's)."""
    config = RouterConfig(router_mode="kv", **{**DYNAMO_DEFAULTS, **overrides})
    p = KvPolicy(config, random.Random(0))
    p.add_worker(WorkerInfo(WA, BLOCK))
    p.add_worker(WorkerInfo(WB, BLOCK))
    return p


def route(p, caches, rid, blocks, target=None):
    tokens = [t for b in blocks for t in b]
    decision = p.select(RouteRequest(rid, tokens, backend_instance_id=target))
    p.on_first_token(rid)
    if caches is not None:
        for ev in caches[decision.instance_id].run(tokens):
            p.apply_kv_event(ev)
    p.on_finish(rid)
    return decision


def blocks_per_worker(p):
    counts = {}
    for ev in p.indexer.dump_events():
        counts[ev.worker_id] = counts.get(ev.worker_id, 0) + len(ev.event.data.blocks)
    return counts


@pytest.mark.parametrize("kv_events", [True, False])
def test_five_request_decisions(kv_events):
    p = policy(kv_events=kv_events)
    caches = {WA: EngineCache(WA), WB: EngineCache(WB)} if kv_events else None
    assert route(p, caches, "r1", [A, B], target=WA).instance_id == WA
    assert route(p, caches, "r2", [A, C, D], target=WA).instance_id == WA
    assert route(p, caches, "r3", [A, C, E], target=WB).instance_id == WB
    d4 = route(p, caches, "r4", [A, C, D, F])
    assert (d4.instance_id, d4.overlap_blocks, d4.required_blocks) == (WA, 3, 4)
    d5 = route(p, caches, "r5", [A, C, G])
    assert (d5.instance_id, d5.overlap_blocks) == (WB, 2)  # tie on cost: b's tree is smaller
    assert blocks_per_worker(p) == {WA: 5, WB: 4}


@pytest.mark.parametrize("kv_events", [True, False])
def test_five_request_decisions_at_our_defaults(kv_events):
    """Weight 16, credit 4: r4 and r5 clamp both prefill costs to 0 and tie on decode blocks;
    r4 goes to a (3 of its 4 blocks cached there, 2 on b), r5 to b (2 on each, smaller tree)."""
    config = RouterConfig(router_mode="kv")
    assert (config.kv_overlap_score_weight, config.kv_overlap_score_credit) == (16.0, 4.0)
    p = policy(kv_overlap_score_weight=16.0, kv_overlap_score_credit=4.0, kv_events=kv_events)
    caches = {WA: EngineCache(WA), WB: EngineCache(WB)} if kv_events else None
    route(p, caches, "r1", [A, B], target=WA)
    route(p, caches, "r2", [A, C, D], target=WA)
    route(p, caches, "r3", [A, C, E], target=WB)
    costs = {c.key[0]: c.cost(16.0, 4.0) for c in p.potential_loads(A + C + D + F)}
    assert costs == {WA: 4.0, WB: 4.0}
    d4 = route(p, caches, "r4", [A, C, D, F])
    assert (d4.instance_id, d4.overlap_blocks) == (WA, 3)
    d5 = route(p, caches, "r5", [A, C, G])
    assert (d5.instance_id, d5.overlap_blocks) == (WB, 2)


@pytest.mark.parametrize(("credit", "expected"), [(1.0, WB), (2.0, WA)])
def test_overlap_credit_keeps_a_busy_worker_that_holds_the_prefix(credit, expected):
    p = policy(kv_events=False, kv_overlap_score_credit=credit)
    prefix = [list(range(i * BLOCK, (i + 1) * BLOCK)) for i in range(6)]
    tokens = [t for b in prefix for t in b]
    assert p.select(RouteRequest("x", tokens, backend_instance_id=WA)).instance_id == WA
    # the same prompt plus 2 blocks while x's 48 tokens are pending on a: a's raw prefill is
    # 6 + 8 blocks less `credit` x 6 cached, its decode 8 (6 shared with x, 2 new); b has 8 + 8
    # (at credit 1 a tie, which b wins with the smaller tree)
    follow = tokens + list(range(9000, 9000 + 2 * BLOCK))
    costs = {c.key[0]: c.cost(1.0, credit) for c in p.potential_loads(follow)}
    assert costs == {WA: 14 - 6 * credit + 8, WB: 16.0}
    assert p.select(RouteRequest("y", follow)).instance_id == expected


@pytest.mark.parametrize(
    ("overrides", "holder_pending_blocks", "expected"),
    [
        ({}, 32, WA),  # our defaults: 32 < 4 x (8 + 4) blocks, a keeps its prefix
        ({}, 56, WB),  # ... not beyond
        ({"kv_overlap_score_credit_queue_scale": 0.0}, 32, WB),  # static: 32 - 8 >= 4 x 4
        (DYNAMO_DEFAULTS, 32, WB),
    ],
)
def test_when_every_worker_is_queued_the_prefix_holder_keeps_it_up_to_a_queue_ratio(
    overrides, holder_pending_blocks, expected
):
    p = KvPolicy(RouterConfig(router_mode="kv", kv_events=False, **overrides), random.Random(0))
    p.add_worker(WorkerInfo(WA, BLOCK))
    p.add_worker(WorkerInfo(WB, BLOCK))
    prefix = list(range(4 * BLOCK))  # a 4-block prompt, cached on a, finished
    p.select(RouteRequest("x", prefix, backend_instance_id=WA))
    p.on_first_token("x")
    p.on_finish("x")
    unrelated = iter(range(10_000, 10**6, 8 * BLOCK))

    def queue(worker, n_blocks):  # unrelated 8-block prompts, still waiting for prefill
        for i in range(n_blocks // 8):
            start = next(unrelated)
            tokens = list(range(start, start + 8 * BLOCK))
            p.select(RouteRequest(f"{worker}-{i}", tokens, backend_instance_id=worker))

    queue(WA, holder_pending_blocks)
    queue(WB, 8)
    assert p.stats().active_prefill_tokens == {
        (WA, 0): holder_pending_blocks * BLOCK,
        (WB, 0): 8 * BLOCK,
    }
    decision = p.select(RouteRequest("y", prefix))
    assert decision.instance_id == expected


def test_prefix_hit_beats_idle_worker_but_load_spreads():
    p = policy(kv_events=False)
    long = [list(range(i * BLOCK, (i + 1) * BLOCK)) for i in range(10)]
    first = p.select(RouteRequest("x", [t for b in long for t in b]))
    # while x's prefill is pending, an idle worker costs the same (20 = 10 + 10 each) ...
    assert {c.key: c.cost(1.0) for c in p.potential_loads([t for b in long for t in b])} == {
        (WA, 0): 20.0,
        (WB, 0): 20.0,
    }
    # ... once x decodes, the same prompt again: its cached blocks win (cost 10 vs 20)
    p.on_first_token("x")
    again = p.select(RouteRequest("y", [t for b in long for t in b]))
    assert again.instance_id == first.instance_id and again.overlap_blocks == 10
    # an unrelated prompt goes to the idle worker
    other = p.select(RouteRequest("z", list(range(5000, 5000 + 4 * BLOCK))))
    assert other.instance_id != first.instance_id


def test_active_load_accounting_and_stats():
    p = policy(kv_events=False)
    tokens = list(range(3 * BLOCK + 3))
    d = p.select(RouteRequest("r", tokens, backend_instance_id=WA))
    key = (WA, 0)
    s = p.stats()
    assert (s.active_decode_blocks[key], s.active_prefill_tokens[key]) == (3, 27)
    assert (d.overlap_blocks, d.required_blocks) == (0, 4)
    p.on_first_token("r")
    assert p.stats().active_prefill_tokens[key] == 0
    p.select(RouteRequest("r2", tokens, backend_instance_id=WA))
    s = p.stats()
    assert (s.active_decode_blocks[key], s.active_prefill_tokens[key]) == (3, 3)
    assert (s.decisions, s.overlap_blocks_total, s.required_blocks_total) == (2, 3, 8)
    assert (s.hit_rate, s.last_hit_rate) == (3 / 8, 3 / 4)
    p.on_finish("r")
    p.on_finish("r2")
    p.on_finish("r2")  # twice is harmless
    s = p.stats()
    assert (s.active_decode_blocks[key], s.active_prefill_tokens[key]) == (0, 0)
    assert s.index_size == 3  # approximate mode keeps the routed blocks until their TTL


def test_potential_loads_do_not_book():
    p = policy(kv_events=False)
    tokens = list(range(2 * BLOCK))
    p.select(RouteRequest("r", tokens, backend_instance_id=WA))
    loads = {
        c.key: (c.overlap_blocks, c.prefill_tokens, c.decode_blocks)
        for c in p.potential_loads(tokens)
    }
    assert loads == {(WA, 0): (2, 16, 2), (WB, 0): (0, 16, 2)}
    assert p.stats().decisions == 1
