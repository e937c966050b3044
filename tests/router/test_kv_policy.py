import random

from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import KvCacheEvent, KvStored, RouterEvent, StoredBlock
from dynamo.router.active_sequences import ActiveSequenceEvent
from dynamo.router.base import RouteRequest, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.kv_policy import STALE_CHECK_S, KvPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def kv(ids=(1, 2), block=4, clock=None, **cfg) -> KvPolicy:
    config = RouterConfig(router_mode="kv", **cfg)
    p = KvPolicy(config, random.Random(0), clock=clock or Clock())
    for i in ids:
        p.add_worker(WorkerInfo(i, block))
    return p


def stored_event(worker, tokens, block=4, event_id=0, dp_rank=0):
    local = block_hashes(tokens, block)
    blocks = tuple(StoredBlock(s, h) for s, h in zip(sequence_hashes(local), local, strict=True))
    return RouterEvent(worker, KvCacheEvent(event_id, KvStored(None, blocks), dp_rank))


TOKENS = list(range(16))  # 4 blocks of 4


def test_events_steer_requests_and_removal_drops_blocks():
    p = kv()
    p.apply_kv_event(stored_event(2, TOKENS))
    d = p.select(RouteRequest("a", TOKENS))
    assert (d.instance_id, d.overlap_blocks, d.required_blocks) == (2, 4, 4)
    p.remove_worker(2)
    assert p.stats().index_size == 0
    p.on_finish("a")  # finishing a request of a removed worker is harmless
    # late events from the removed worker are ignored, not re-indexed
    p.apply_kv_event(stored_event(2, TOKENS, event_id=1))
    assert p.stats().events_ignored == 1
    assert p.stats().index_size == 0
    assert p.select(RouteRequest("b", TOKENS)).instance_id == 1


def test_events_before_discovery_are_kept():
    p = kv(ids=(1,))
    p.apply_kv_event(stored_event(5, TOKENS))
    p.add_worker(WorkerInfo(5, 4))
    assert p.select(RouteRequest("a", TOKENS)).instance_id == 5


def test_event_gap_is_counted_and_stale_blocks_dropped():
    p = kv()
    p.apply_kv_event(stored_event(2, TOKENS, event_id=0))
    p.apply_kv_event(stored_event(2, list(range(100, 104)), event_id=5))
    s = p.stats()
    assert (s.event_gaps, s.events_applied, s.index_size) == (1, 2, 1)
    assert p.select(RouteRequest("a", TOKENS)).overlap_blocks == 0


def test_restart_is_counted():
    p = kv()
    p.apply_kv_event(stored_event(2, TOKENS, event_id=7))
    p.apply_kv_event(stored_event(2, TOKENS[:4], event_id=0))
    assert p.stats().worker_resets == 1
    assert p.stats().index_size == 1


def test_approximate_mode_ignores_events_and_expires_by_ttl():
    clock = Clock()
    p = kv(clock=clock, kv_events=False, router_ttl_s=30.0)
    p.apply_kv_event(stored_event(2, TOKENS))
    assert p.stats().events_ignored == 1
    first = p.select(RouteRequest("a", TOKENS))
    p.on_finish("a")
    assert p.select(RouteRequest("b", TOKENS)).instance_id == first.instance_id
    p.on_finish("b")
    clock.now += 31
    d = p.select(RouteRequest("c", TOKENS))
    assert d.overlap_blocks == 0
    assert p.stats().approx_expired == 4


def test_block_size_override_and_per_worker_block_sizes():
    p = kv(ids=(), kv_cache_block_size=8)
    p.add_worker(WorkerInfo(1, 4))
    assert p.select(RouteRequest("a", TOKENS)).required_blocks == 2
    q = kv(ids=())
    q.add_worker(WorkerInfo(1, 4))
    q.add_worker(WorkerInfo(2, 8))
    q.apply_kv_event(stored_event(2, TOKENS, block=8))
    d = q.select(RouteRequest("a", TOKENS))
    assert (d.instance_id, d.overlap_blocks, d.required_blocks) == (2, 2, 2)


def test_dp_ranks_are_routed_separately():
    p = kv(ids=())
    p.add_worker(WorkerInfo(1, 4, data_parallel_size=2))
    p.apply_kv_event(stored_event(1, TOKENS, dp_rank=1))
    d = p.select(RouteRequest("a", TOKENS))
    assert (d.instance_id, d.dp_rank, d.overlap_blocks) == (1, 1, 4)
    d = p.select(RouteRequest("b", TOKENS, backend_instance_id=1))
    assert (d.dp_rank, d.overlap_blocks) == (1, 4)


def test_per_request_overrides():
    p = kv()
    p.apply_kv_event(stored_event(2, TOKENS))
    p.select(RouteRequest("busy", list(range(50, 50 + 40)), backend_instance_id=2))
    p.on_first_token("busy")
    # worker 2 holds the 4 blocks but decodes 10: weight 0 costs 4 vs 14, weight 10 44 vs 14
    assert p.select(RouteRequest("a", TOKENS, overlap_score_weight=0.0)).instance_id == 1
    p.on_finish("a")
    assert p.select(RouteRequest("b", TOKENS, overlap_score_weight=10.0)).instance_id == 2
    p.on_finish("b")
    picks = {
        p.select(RouteRequest(f"t{i}", TOKENS, router_temperature=50.0)).instance_id
        for i in range(40)
    }
    assert picks == {1, 2}


def test_rerouting_a_request_releases_the_first_booking():
    p = kv()
    p.select(RouteRequest("a", TOKENS, backend_instance_id=1))
    p.select(RouteRequest("a", TOKENS, backend_instance_id=2))
    s = p.stats()
    assert s.active_decode_blocks == {(1, 0): 0, (2, 0): 4}
    assert s.active_prefill_tokens == {(1, 0): 0, (2, 0): 16}


def test_no_track_active_blocks_ignores_load():
    p = kv(track_active_blocks=False)
    p.apply_kv_event(stored_event(2, TOKENS))
    for i in range(5):
        assert p.select(RouteRequest(f"r{i}", TOKENS)).instance_id == 2
    assert p.stats().active_decode_blocks == {(1, 0): 0, (2, 0): 0}


def test_no_assume_kv_reuse_counts_shared_blocks_per_request():
    reuse, no_reuse = kv(), kv(assume_kv_reuse=False)
    for p in (reuse, no_reuse):
        p.select(RouteRequest("a", TOKENS, backend_instance_id=1))
        p.select(RouteRequest("b", TOKENS, backend_instance_id=1))
    assert reuse.stats().active_decode_blocks[(1, 0)] == 4
    assert no_reuse.stats().active_decode_blocks[(1, 0)] == 8


def test_stale_requests_are_force_freed():
    clock = Clock()
    p = kv(clock=clock)
    p.select(RouteRequest("lost", TOKENS, backend_instance_id=1))
    clock.now += STALE_CHECK_S
    p.select(RouteRequest("x", TOKENS[:4], backend_instance_id=2))  # first check: remembers
    clock.now += STALE_CHECK_S
    p.select(RouteRequest("y", TOKENS[:4], backend_instance_id=2))  # second: frees "lost", "x"
    s = p.stats()
    assert s.active_decode_blocks[(1, 0)] == 0
    assert s.active_decode_blocks[(2, 0)] == 1


def test_replica_sync_shares_active_load():
    bus: list[ActiveSequenceEvent] = []
    r1 = KvPolicy(
        RouterConfig(router_replica_sync=True), random.Random(0), router_id="r1", publish=bus.append
    )
    r2 = KvPolicy(RouterConfig(router_replica_sync=True), random.Random(0), router_id="r2")
    for p in (r1, r2):
        p.add_worker(WorkerInfo(1, 4))
        p.add_worker(WorkerInfo(2, 4))
    r1.select(RouteRequest("a", TOKENS, backend_instance_id=1))
    r1.on_first_token("a")
    assert [e.kind for e in bus] == ["add", "prefill_done"]
    for e in bus:
        wire = ActiveSequenceEvent.from_wire(e.to_wire())
        assert wire == e
        r2.apply_sync_event(wire)
        r1.apply_sync_event(wire)  # own events are ignored
    assert r2.stats().active_decode_blocks[(1, 0)] == 4
    assert r1.stats().active_decode_blocks[(1, 0)] == 4
    # r2 now prefers the idle worker for an unrelated prompt
    assert r2.select(RouteRequest("b", list(range(100, 116)))).instance_id == 2
    r1.on_finish("a")
    r2.apply_sync_event(bus[-1])
    assert r2.stats().active_decode_blocks[(1, 0)] == 0


def test_replica_sync_off_publishes_nothing():
    bus: list[ActiveSequenceEvent] = []
    p = KvPolicy(RouterConfig(), random.Random(0), publish=bus.append)
    p.add_worker(WorkerInfo(1, 4))
    p.select(RouteRequest("a", TOKENS))
    assert bus == []


def test_short_prompt_has_no_blocks():
    p = kv()
    d = p.select(RouteRequest("a", [1, 2]))
    assert (d.overlap_blocks, d.required_blocks) == (0, 1)


def test_a_long_prompt_routed_again_reuses_its_hashes_and_decides_the_same():
    from dynamo.router import kv_policy

    prompt = [(i * 7919) % 50_000 for i in range(4 * kv_policy.REUSE_MIN_TOKENS)]
    want = (block_hashes(prompt, 4), sequence_hashes(block_hashes(prompt, 4)))
    assert kv_policy.prompt_hashes(prompt, 4) == want
    assert kv_policy._LastPrompt.last[0] is prompt  # kept for the next routing of this list
    local, seqs = kv_policy.prompt_hashes(prompt, 4)
    assert (local, seqs) == want
    local.append(1)  # the caller's copy, not the kept one
    assert kv_policy.prompt_hashes(prompt, 4) == want
    assert kv_policy.prompt_hashes(prompt, 16) == (
        block_hashes(prompt, 16),
        sequence_hashes(block_hashes(prompt, 16)),
    )
    other = [*prompt[:-1], 3]  # a new list: its own hashes
    assert kv_policy.prompt_hashes(other, 16)[0][-1] == block_hashes(other, 16)[-1]
    prompt.append(5)  # changed in place (the frontend never does): still not stale
    assert kv_policy.prompt_hashes(prompt, 16)[0] == block_hashes(prompt, 16)
    short = list(range(8))
    kv_policy.prompt_hashes(short, 4)
    assert kv_policy._LastPrompt.last[0] is prompt  # short prompts are not kept

    # the preview, prefill and decode routings of one disaggregated prompt: same decisions
    # as with a fresh copy each time
    p, q = kv(), kv()
    for policy in (p, q):
        policy.apply_kv_event(stored_event(2, prompt[:1000]))
    for rid in ("a", "b"):
        got = [p.preview(RouteRequest(rid, prompt)), p.select(RouteRequest(rid, prompt))]
        fresh = [
            q.preview(RouteRequest(rid, list(prompt))),
            q.select(RouteRequest(rid, list(prompt))),
        ]
        assert got == fresh
        assert got[1].overlap_blocks == 250
