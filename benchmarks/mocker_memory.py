"""Mocker memory: RSS of N mocker engines with full KV caches and a thousand queued requests.

Phase 1 fills every engine's cache (default 4 engines x 16,384 blocks of 64 tokens) with
distinct prompts, so every block is an entry of the prefix cache. Phase 2 submits 1,000
requests at once (prompts of 512..2,048 tokens, 128 output tokens, spread over the engines)
and samples the process RSS until they have all finished. Also compares the
wall time of a short run at speedup 1 against its simulated time, and measures the CPU cost
of a decode step with 256 running requests for several cache sizes.

    .venv/bin/python benchmarks/mocker_memory.py [--engines 4] [--blocks 16384] [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import time

import psutil

from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.engine import MockerEngine
from dynamo.engines.mocker.sampling import TokenSampler
from dynamo.engines.mocker.scheduler import Scheduler
from dynamo.mocker.tinymodel import TINY_MODEL_SPECIAL_TOKEN_IDS, TINY_MODEL_VOCAB_SIZE
from dynamo.protocols.engine import EngineRequest
from dynamo.protocols.kv_events import KvCacheEvent
from dynamo.runtime.transport.base import RequestContext

MB = 1024 * 1024


class CountingSink:
    """Counts KV events instead of keeping them (keeping them would dominate memory)."""

    def __init__(self) -> None:
        self.events = 0

    def kv_event(self, event: KvCacheEvent) -> None:
        self.events += 1

    def load_changed(self) -> None:
        pass


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


def request(rid: str, tokens: list[int], max_tokens: int) -> EngineRequest:
    return {
        "request_id": rid,
        "model": "tiny",
        "token_ids": tokens,
        "stop_conditions": {"max_tokens": max_tokens},
        "sampling_options": {},
    }


async def run_one(engine: MockerEngine, req: EngineRequest) -> int:
    n = 0
    async for out in engine.generate(req, RequestContext(req["request_id"])):
        n += len(out.get("token_ids", []))
    return n


async def fill(engine: MockerEngine, rng: random.Random, blocks: int, block_size: int) -> None:
    """Distinct prompts until every block of the cache has held a full, cached block."""
    per_prompt = 128  # blocks per fill prompt
    for batch_start in range(0, blocks + per_prompt, per_prompt * 16):
        # small ids (< 257) are shared int objects, so fill prompts cost little themselves
        reqs = [
            request(
                f"fill-{batch_start}-{i}",
                [rng.randrange(3, 257) for _ in range(per_prompt * block_size)],
                1,
            )
            for i in range(16)
        ]
        await asyncio.gather(*(run_one(engine, r) for r in reqs))


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(7)
    rss_start = rss_mb()
    cfg = MockerConfig(
        num_gpu_blocks=args.blocks, block_size=args.block_size, speedup_ratio=args.speedup
    )
    engines = [
        MockerEngine(
            cfg, TINY_MODEL_VOCAB_SIZE, [2], special_token_ids=TINY_MODEL_SPECIAL_TOKEN_IDS
        )
        for _ in range(args.engines)
    ]
    sinks = [CountingSink() for _ in engines]
    for engine, sink in zip(engines, sinks, strict=True):
        await engine.start(sink)

    t0 = time.perf_counter()
    for engine in engines:
        await fill(engine, rng, args.blocks, args.block_size)
    gc.collect()
    fill_s = time.perf_counter() - t0
    cached = [s.kv.inactive_blocks for e in engines for s in e.schedulers]
    rss_filled = rss_mb()
    fill_events = sum(s.events for s in sinks)

    reqs = [
        request(
            f"req-{i}",
            [
                rng.randrange(3, TINY_MODEL_VOCAB_SIZE)
                for _ in range(rng.randint(args.prompt_min, args.prompt_max))
            ],
            args.max_tokens,
        )
        for i in range(args.requests)
    ]
    prompt_tokens = sum(len(r["token_ids"]) for r in reqs)
    rss_prompts = rss_mb()
    peak = rss_prompts
    peak_queued = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak, peak_queued
        while not done.is_set():
            queued = sum(
                m.waiting_requests + m.running_requests for e in engines for m in e.metrics()
            )
            peak_queued = max(peak_queued, queued)
            peak = max(peak, rss_mb())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    t1 = time.perf_counter()
    outputs = await asyncio.gather(
        *(run_one(engines[i % len(engines)], r) for i, r in enumerate(reqs))
    )
    run_s = time.perf_counter() - t1
    done.set()
    await sampler
    peak = max(peak, rss_mb())
    for engine in engines:
        await engine.shutdown()
    simulated, wall = await timing_fidelity(args.fidelity_speedup)

    print(f"engines x blocks x block size : {args.engines} x {args.blocks} x {args.block_size}")
    print(f"RSS at start                  : {rss_start:.1f} MB")
    print(
        f"RSS with full caches          : {rss_filled:.1f} MB "
        f"({sum(cached)} cached blocks, filled in {fill_s:.1f} s, "
        f"{fill_events} KV events)"
    )
    print(
        f"RSS + {args.requests} prompt lists  : {rss_prompts:.1f} MB "
        f"({prompt_tokens} prompt tokens)"
    )
    print(f"peak RSS while serving        : {peak:.1f} MB (peak in flight: {peak_queued})")
    print(
        f"served                        : {len(outputs)} requests, {sum(outputs)} tokens "
        f"in {run_s:.1f} s wall at speedup {args.speedup:g}"
    )
    print(
        f"timing fidelity               : simulated {simulated:.3f} s, wall {wall:.3f} s "
        f"(32 requests x 512+100 tokens, speedup {args.fidelity_speedup:g})"
    )
    for blocks in (4096, 16384, 65536):
        cost = decode_step_cost_ms(blocks)
        print(f"decode step, 256 running      : {cost:.2f} ms CPU with {blocks} blocks")


def decode_step_cost_ms(num_blocks: int) -> float:
    """Mean CPU time of a scheduler decode step with >= 200 running requests."""
    sched = Scheduler(MockerConfig(num_gpu_blocks=num_blocks), TokenSampler(2048, [2]))
    rng = random.Random(1)
    for key in range(1000):
        prompt = [rng.randrange(3, 2048) for _ in range(1000)]
        sched.add_request(key, prompt, seed=key, max_tokens=200)
    total = 0.0
    steps = 0
    while sched.has_work():
        t0 = time.process_time()
        result = sched.step()
        dt = time.process_time() - t0
        if result.prefill_tokens == 0 and len(result.batch) >= 200:
            total += dt
            steps += 1
    return total / max(steps, 1) * 1000


async def timing_fidelity(speedup: float) -> tuple[float, float]:
    """(simulated, wall) seconds of one engine serving 32 concurrent requests."""
    engine = MockerEngine(MockerConfig(speedup_ratio=speedup), TINY_MODEL_VOCAB_SIZE, [2])
    await engine.start(CountingSink())
    reqs = [request(f"t{i}", [5 + i] * 512, 100) for i in range(32)]
    t0 = time.perf_counter()
    await asyncio.gather(*(run_one(engine, r) for r in reqs))
    wall = time.perf_counter() - t0
    simulated = engine.schedulers[0].simulated_time_s
    await engine.shutdown()
    return simulated, wall


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=16384)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--prompt-min", type=int, default=512)
    parser.add_argument("--prompt-max", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--speedup", type=float, default=100.0)
    parser.add_argument("--fidelity-speedup", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
