"""Property tests of the scheduler over random request mixes (with aborts and preemption).

Checked on every step (Driver): the cache's own invariants, refcounts == holders, token budget,
`max_num_seqs`, block capacity, one token per request per step. Checked here: outputs are
complete and in order, nothing leaks, KV events describe the cache exactly, and cached-token
counts match an independent LRU model.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from _mocker_helpers import Driver, config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import KvRemoved, KvStored

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Any, list[tuple[Any, ...]]]:
    """Random configs and op lists; under "pressure" long outputs overflow a tiny cache."""
    pressure = draw(st.booleans())
    bs = draw(st.integers(2, 6))
    cfg = config(
        num_gpu_blocks=draw(st.integers(4, 10) if pressure else st.integers(4, 24)),
        block_size=bs,
        max_num_seqs=draw(st.integers(1, 6)),
        max_num_batched_tokens=draw(st.integers(bs, 64)),
        enable_prefix_caching=draw(st.booleans()),
        enable_chunked_prefill=draw(st.booleans()),
        preemption_mode=draw(st.sampled_from(["lifo", "fifo"])),
        watermark=0.0 if pressure else draw(st.sampled_from([0.0, 0.1, 0.3])),
    )
    max_len = cfg.effective_max_model_len
    tokens = st.integers(3, 12)  # a tiny alphabet, so prompts share prefixes
    base_len = min(max_len, 8 * bs)
    prompt_len = st.integers(1, min(base_len, draw(st.sampled_from([3 * bs, base_len]))))
    base = st.lists(tokens, min_size=base_len, max_size=base_len)
    bases = draw(st.lists(base, min_size=1, max_size=3))
    add = st.tuples(
        st.just("add"),
        st.sampled_from(bases),
        prompt_len,
        st.lists(tokens, max_size=bs),
        st.integers(3 * bs, 8 * bs) if pressure else st.integers(1, 5 * bs),  # max_tokens
        st.integers(0, 2),  # seed: equal seeds and prompts give equal outputs (shared blocks)
    )
    step = st.tuples(st.just("step"), st.integers(1, 6))
    abort = st.tuples(st.just("abort"), st.integers(0, 40))
    first = draw(st.lists(add, min_size=3 if pressure else 0, max_size=6))
    return cfg, first + draw(st.lists(st.one_of(add, add, step, abort), max_size=40))


def run(cfg: Any, ops: list[tuple[Any, ...]]) -> tuple[Driver, dict[int, tuple[list[int], int]]]:
    d = Driver(cfg)
    requests: dict[int, tuple[list[int], int]] = {}
    for op in ops:
        if op[0] == "add":
            _, base, cut, tail, max_tokens, seed = op
            prompt = ([*base[:cut], *tail] or [5])[: cfg.effective_max_model_len]
            key = len(requests)
            requests[key] = (prompt, max_tokens)
            d.add(key, prompt, max_tokens=max_tokens, seed=seed)
        elif op[0] == "step":
            for _ in range(op[1]):
                d.step()
        elif d.scheduler.abort(op[1]):
            d.finished[op[1]] = None  # aborted
    d.drain()
    event(f"preempted: {d.preemptions > 0}")
    event(f"evicted: {any(isinstance(e.data, KvRemoved) for e in d.events)}")
    return d, requests


@SETTINGS
@given(scenarios())
def test_random_mixes(scenario: Any) -> None:
    cfg, ops = scenario
    d, requests = run(cfg, ops)
    check_every_request_finished_completely_and_nothing_leaked(cfg, ops, d, requests)
    check_kv_events_describe_the_cache_exactly(cfg, d, requests)


def check_every_request_finished_completely_and_nothing_leaked(
    cfg: Any, ops: list[tuple[Any, ...]], d: Driver, requests: dict[int, tuple[list[int], int]]
) -> None:
    s = d.scheduler
    assert s.kv.active_blocks == 0 and s.kv.private_blocks == 0
    assert s.num_running == 0 and s.num_waiting == 0 and s.pending_prefill_tokens == 0
    for key, (prompt, max_tokens) in requests.items():
        out = d.outputs.get(key, [])
        assert key in d.finished, f"request {key} never finished"
        fin = d.finished[key]
        if fin is not None:
            assert fin.reason == "length"
            assert fin.completion_tokens == len(out)
            assert len(out) == min(max_tokens, max(1, cfg.effective_max_model_len - len(prompt)))
        # deterministic, in order, never repeated: token i is the sampler's token i
        assert out == [d.sampler.token(_seed_of(ops, key), i) for i in range(len(out))]


def _seed_of(ops: list[tuple[Any, ...]], key: int) -> int:
    adds = [op for op in ops if op[0] == "add"]
    return int(adds[key][5])


def check_kv_events_describe_the_cache_exactly(
    cfg: Any, d: Driver, requests: dict[int, tuple[list[int], int]]
) -> None:
    assert [e.event_id for e in d.events] == list(range(len(d.events)))
    if not cfg.enable_prefix_caching:
        assert d.events == []
        return
    # what each block's parent and content hash must be, from the requests' own tokens
    parent_of: dict[int, int | None] = {}
    local_of: dict[int, int] = {}
    for key, (prompt, _) in requests.items():
        local = block_hashes([*prompt, *d.outputs.get(key, [])], cfg.block_size)
        seq = sequence_hashes(local)
        for i, h in enumerate(seq):
            parent_of[h] = seq[i - 1] if i else None
            local_of[h] = local[i]
    view: set[int] = set()  # what a router replaying the events believes is cached
    for kv_event in d.events:
        data = kv_event.data
        if isinstance(data, KvStored):
            prev = data.parent_hash
            assert prev is None or prev in view, "stored under a parent the router never saw"
            for block in data.blocks:
                assert block.block_hash not in view, "stored a block that was already cached"
                assert parent_of[block.block_hash] == prev
                assert local_of[block.block_hash] == block.tokens_hash
                view.add(block.block_hash)
                prev = block.block_hash
        else:
            assert isinstance(data, KvRemoved)
            for h in data.block_hashes:
                assert h in view, "removed a block that was never stored"
                view.remove(h)
    assert view == d.scheduler.kv.cached_block_hashes()


class LruModel:
    """One request at a time over an LRU cache of `capacity` blocks, written from scratch."""

    def __init__(self, capacity: int, block_size: int) -> None:
        self.capacity = capacity
        self.bs = block_size
        self.cache: OrderedDict[int, None] = OrderedDict()  # unreferenced blocks, LRU first
        self.held = 0

    def _take_slots(self, n: int) -> None:
        free = self.capacity - self.held - len(self.cache)
        for _ in range(max(0, n - free)):
            self.cache.popitem(last=False)
        self.held += n

    def run(self, prompt: list[int], output: list[int]) -> int:
        """Serve one request; return its cached prompt tokens."""
        bs, p = self.bs, len(prompt)
        kv_tokens = [*prompt, *output[:-1]]  # the last sampled token is never computed
        seq = sequence_hashes(block_hashes(kv_tokens, bs))
        hits = 0
        while hits < (p - 1) // bs and seq[hits] in self.cache:
            hits += 1
        for h in seq[:hits]:
            del self.cache[h]
        self.held = hits
        self._take_slots(-(-p // bs) - hits)  # the whole prompt is reserved on admission
        for h in seq[hits : p // bs]:
            self.cache.pop(h, None)  # computed again: a cached copy is reused
        for t in range(p, len(kv_tokens)):  # decode, one position at a time
            if t >= self.held * bs:
                self._take_slots(1)
            if (t + 1) % bs == 0:
                self.cache.pop(seq[t // bs], None)
        for h in reversed(seq):  # released tail first: the tail is evicted first
            self.cache[h] = None
        self.held = 0
        return hits * bs


@st.composite
def sequential_requests(draw: st.DrawFn) -> list[tuple[list[int], int]]:
    bases = draw(
        st.lists(st.lists(st.integers(3, 6), min_size=40, max_size=40), min_size=1, max_size=3)
    )
    one = st.tuples(
        st.sampled_from(bases), st.integers(1, 40), st.lists(st.integers(3, 6), max_size=4)
    ).map(lambda t: [*t[0][: t[1]], *t[2]])
    return draw(st.lists(st.tuples(one, st.integers(1, 12)), min_size=1, max_size=12))


@SETTINGS
@given(
    capacity=st.integers(3, 30),
    bs=st.integers(2, 5),
    budget=st.integers(2, 40),
    prompts=sequential_requests(),
)
def test_cached_tokens_match_an_independent_lru_model(
    capacity: int, bs: int, budget: int, prompts: list[tuple[list[int], int]]
) -> None:
    cfg = config(
        num_gpu_blocks=capacity, block_size=bs, max_num_seqs=1, max_num_batched_tokens=budget
    )
    d = Driver(cfg)
    reqs = [(p[: cfg.effective_max_model_len], m) for p, m in prompts]
    for key, (prompt, max_tokens) in enumerate(reqs):
        d.add(key, prompt, max_tokens=max_tokens, seed=key)
    d.drain()
    model = LruModel(capacity, bs)
    for key, (prompt, _) in enumerate(reqs):
        assert d.finished[key].cached_tokens == model.run(prompt, d.outputs[key]), key
    event(f"hits: {sum(f.cached_tokens > 0 for f in d.finished.values()) > 1}")
    event(f"evicted: {any(isinstance(e.data, KvRemoved) for e in d.events)}")
    assert set(model.cache) == d.scheduler.kv.cached_block_hashes()


@SETTINGS
@given(
    prompts=st.lists(st.lists(st.integers(3, 5), min_size=1, max_size=30), min_size=1, max_size=10)
)
def test_with_a_cache_that_never_evicts_hits_are_the_longest_seen_prefix(
    prompts: list[list[int]],
) -> None:
    bs = 3
    d = Driver(config(num_gpu_blocks=1000, block_size=bs, max_num_seqs=1))
    for key, prompt in enumerate(prompts):
        d.add(key, prompt, max_tokens=2, seed=key)
    d.drain()
    seen: set[tuple[int, ...]] = set()
    for key, prompt in enumerate(prompts):
        hits = 0
        while hits < (len(prompt) - 1) // bs and tuple(prompt[: (hits + 1) * bs]) in seen:
            hits += 1
        assert d.finished[key].cached_tokens == hits * bs
        kv = [*prompt, *d.outputs[key][:-1]]
        seen.update(tuple(kv[: (i + 1) * bs]) for i in range(len(kv) // bs))
