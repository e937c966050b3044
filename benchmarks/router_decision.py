"""Router decision cost: KV-event throughput and `KvPolicy.select` latency at scale.

64 workers, 1,000,000 indexed (worker, block) pairs fed as Dynamo KV events, then the p50/p99
decision time for a 12,000-token prompt that every worker holds a different share of (so the
prefix walk runs the whole prompt) while each worker has active requests.

    .venv/bin/python benchmarks/router_decision.py [--block-size 16 64] [--decisions 300]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import (
    KvCacheEvent,
    KvRemoved,
    KvStored,
    RouterEvent,
    StoredBlock,
)
from dynamo.router.base import RouteRequest, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.kv_policy import KvPolicy


class Feeder:
    """Builds per-worker event streams with consecutive event ids."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id: dict[int, int] = {}

    def event(self, worker: int, data: KvStored | KvRemoved) -> RouterEvent:
        eid = self.next_id.get(worker, 0)
        self.next_id[worker] = eid + 1
        return RouterEvent(worker, KvCacheEvent(eid, data))

    def chain(
        self, worker: int, tokens_hashes: list[int], per_event: int
    ) -> tuple[list[RouterEvent], list[int]]:
        """Stored events for one chain from the root; returns the events and external hashes."""
        events, ext = [], []
        parent = None
        for i in range(0, len(tokens_hashes), per_event):
            blocks = tuple(
                StoredBlock(self.rng.getrandbits(63), h) for h in tokens_hashes[i : i + per_event]
            )
            events.append(self.event(worker, KvStored(parent, blocks)))
            ext.extend(b.block_hash for b in blocks)
            parent = blocks[-1].block_hash
        return events, ext


def build(args: argparse.Namespace, block_size: int) -> dict[str, float]:
    rng = random.Random(42)
    policy = KvPolicy(RouterConfig(router_mode="kv"), random.Random(0))
    workers = list(range(1, args.workers + 1))
    for w in workers:
        policy.add_worker(WorkerInfo(w, block_size, total_kv_blocks=1 << 20))
    feeder = Feeder(rng)

    prompt = [rng.randrange(32_000) for _ in range(args.prompt_tokens)]
    prompt_local = block_hashes(prompt, block_size)
    n_prompt = len(prompt_local)

    # Each worker holds a different leading share of the prompt, then random chains of 64.
    events: list[RouterEvent] = []
    per_worker = args.blocks // args.workers
    for i, w in enumerate(workers):
        share = n_prompt * (i + 1) // args.workers
        evs, _ = feeder.chain(w, prompt_local[:share], args.blocks_per_event)
        events += evs
        held = share
        while held < per_worker:
            n = min(64, per_worker - held)
            evs, _ = feeder.chain(w, [rng.getrandbits(64) for _ in range(n)], args.blocks_per_event)
            events += evs
            held += n
    events.sort(key=lambda e: (e.event.event_id, e.worker_id))  # interleave workers

    # The pre-built events are the benchmark's, not the router's: keep the GC off them (on a
    # live event plane each decoded event is garbage right after it is applied).
    gc.collect()
    gc.freeze()
    c0, t0 = time.thread_time(), time.perf_counter()
    for ev in events:
        policy.apply_kv_event(ev)
    store_s = time.perf_counter() - t0
    store_cpu_s = time.thread_time() - c0
    stats = policy.stats()
    assert stats.event_gaps == stats.missing_parents == 0, stats
    stored_events = len(events)
    del events
    gc.unfreeze()

    # Steady-state churn: remove then re-store a 64-block chain, per worker, round robin.
    churn: list[RouterEvent] = []
    for _ in range(args.churn_rounds):
        for w in workers:
            evs, ext = feeder.chain(
                w, [rng.getrandbits(64) for _ in range(64)], args.blocks_per_event
            )
            churn += evs
            for i in range(0, len(ext), args.blocks_per_event):
                churn.append(feeder.event(w, KvRemoved(tuple(ext[i : i + args.blocks_per_event]))))
    gc.collect()
    gc.freeze()
    c0, t0 = time.thread_time(), time.perf_counter()
    for ev in churn:
        policy.apply_kv_event(ev)
    churn_s = time.perf_counter() - t0
    churn_cpu_s = time.thread_time() - c0
    n_churn = len(churn)
    del churn
    gc.unfreeze()

    # Active load: every worker runs a few requests, some sharing a prefix with the prompt.
    for w in workers:
        for j in range(args.active_per_worker):
            tokens = prompt[: rng.randrange(0, 4000)] + [rng.randrange(32_000) for _ in range(800)]
            policy.select(RouteRequest(f"bg-{w}-{j}", tokens, backend_instance_id=w))

    gc.collect()  # a full pass untracks the index's tuples; the timed loop keeps GC enabled
    times, cpu_times, hash_times = [], [], []
    for k in range(args.decisions):
        c0, t0 = time.thread_time(), time.perf_counter()
        decision = policy.select(RouteRequest(f"q{k}", prompt))
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.thread_time() - c0)
        policy.on_finish(f"q{k}")
        t0 = time.perf_counter()
        sequence_hashes(block_hashes(prompt, block_size))
        hash_times.append(time.perf_counter() - t0)
    times.sort()
    cpu_times.sort()
    stats = policy.stats()
    return {
        "block_size": block_size,
        "prompt_blocks": n_prompt,
        "index_size": stats.index_size,
        "stored_events_per_s": stored_events / store_s,
        "stored_blocks_per_s": stored_events * args.blocks_per_event / store_s,
        "stored_events_per_cpu_s": stored_events / store_cpu_s,
        "churn_events_per_s": n_churn / churn_s,
        "churn_events_per_cpu_s": n_churn / churn_cpu_s,
        "select_p50_ms": statistics.median(times) * 1e3,
        "select_p99_ms": times[int(0.99 * (len(times) - 1))] * 1e3,
        "select_max_ms": times[-1] * 1e3,
        "select_cpu_p50_ms": statistics.median(cpu_times) * 1e3,
        "select_cpu_p99_ms": cpu_times[int(0.99 * (len(cpu_times) - 1))] * 1e3,
        "hashing_p50_ms": statistics.median(hash_times) * 1e3,
        "overlap_blocks": decision.overlap_blocks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=1_000_000, help="(worker, block) pairs")
    ap.add_argument("--prompt-tokens", type=int, default=12_000)
    ap.add_argument("--block-size", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--blocks-per-event", type=int, default=4)
    ap.add_argument("--churn-rounds", type=int, default=20)
    ap.add_argument("--active-per-worker", type=int, default=4)
    ap.add_argument("--decisions", type=int, default=300)
    args = ap.parse_args()
    for bs in args.block_size:
        r = build(args, bs)
        print(
            f"block size {r['block_size']}: prompt {r['prompt_blocks']} blocks, index "
            f"{r['index_size']:,} (worker, block) pairs, chosen overlap {r['overlap_blocks']}\n"
            f"  stored events ({args.blocks_per_event} blocks each): "
            f"{r['stored_events_per_s']:,.0f}/s wall, {r['stored_events_per_cpu_s']:,.0f}/s CPU\n"
            f"  store+remove churn: {r['churn_events_per_s']:,.0f}/s wall, "
            f"{r['churn_events_per_cpu_s']:,.0f}/s CPU\n"
            f"  select wall: p50 {r['select_p50_ms']:.3f} ms, p99 {r['select_p99_ms']:.3f} ms, "
            f"max {r['select_max_ms']:.3f} ms\n"
            f"  select CPU:  p50 {r['select_cpu_p50_ms']:.3f} ms, "
            f"p99 {r['select_cpu_p99_ms']:.3f} ms (hashing alone p50 {r['hashing_p50_ms']:.3f} ms)",
            flush=True,
        )


if __name__ == "__main__":
    main()
