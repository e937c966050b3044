"""Time to first token of a burst: B long prompts sent at the same instant to one mocker.

    python benchmarks/frontend_burst.py [--burst 16 --tokens 6000 --rounds 10]
        [--peer-venv .venv-peer | --no-peer] [--speedup 1000]

The engine is made negligible (`--speedup 1000`), so the TTFT measured is what the frontend
adds: parsing, tokenizing B prompts of T tokens that arrived together, routing. Each round
sends B fresh prompts (distinct random words, so no prefix is cached) at once over warm
connections, streams one token each and records TTFT; rounds are spaced out. Prints TTFT
p50/p99/max over all requests and the mean of the rounds' first and last TTFT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from _procs import (
    MODEL_NAME,
    BenchError,
    add_common_arguments,
    bench_dir,
    cpu_used,
    find_peer,
    start_stack,
    tiny_model_dir,
)


def vocabulary(model_dir: str) -> list[str]:
    """Whole words that are one token each (with their leading space)."""
    vocab = json.loads((Path(model_dir) / "tokenizer.json").read_text())["model"]["vocab"]
    return sorted(w[1:] for w in vocab if w.startswith("\u0120") and w[1:].isalpha())


async def ttft(session: aiohttp.ClientSession, url: str, prompt: str) -> float:
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": 1, "stream": True}
    start = time.perf_counter()
    async with session.post(url + "/v1/completions", json=body) as r:
        if r.status != 200:
            raise BenchError(f"HTTP {r.status}: {(await r.text())[:300]}")
        first = None
        async for line in r.content:
            if first is None and line.startswith(b"data: {"):
                first = time.perf_counter()
    if first is None:
        raise BenchError("a stream ended without a chunk")
    return first - start


async def bursts(url: str, args: argparse.Namespace, words: list[str]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        # warm up: open B keep-alive connections and load the tokenizer
        await asyncio.gather(*(ttft(session, url, " hello") for _ in range(args.burst)))
        all_ttft: list[float] = []
        firsts, lasts = [], []
        for _ in range(args.rounds):
            prompts = [
                " " + " ".join(rng.choice(words) for _ in range(args.tokens))
                for _ in range(args.burst)
            ]
            times = sorted(await asyncio.gather(*(ttft(session, url, p) for p in prompts)))
            all_ttft += times
            firsts.append(times[0])
            lasts.append(times[-1])
            await asyncio.sleep(args.pause_s)
    all_ttft.sort()
    ms = 1000.0
    return {
        "ttft_p50_ms": ms * statistics.median(all_ttft),
        "ttft_p99_ms": ms * all_ttft[min(len(all_ttft) - 1, int(0.99 * len(all_ttft)))],
        "ttft_max_ms": ms * all_ttft[-1],
        "first_mean_ms": ms * statistics.mean(firsts),
        "last_mean_ms": ms * statistics.mean(lasts),
        "requests": len(all_ttft),
    }


def measure(
    name: str, args: argparse.Namespace, model_dir: str, words: list[str], peer: Path | None
) -> dict[str, Any]:
    bench = bench_dir(args.bench_dir) if peer else None
    stack, url = start_stack(
        name, model_dir, "round-robin", peer=peer, bench=bench, speedup=args.speedup, **SHAPE
    )
    with stack, cpu_used(stack, ("frontend",)) as cpu:
        result = asyncio.run(bursts(url, args, words))
    result["frontend_cpu_ms_per_req"] = 1000 * cpu["frontend"] / result["requests"]
    return result


SHAPE = {"workers": 1, "block_size": 16, "blocks": 16384}
HEADER = "system  TTFT p50 ms   p99 ms   max ms  first ms  last ms  frontend CPU ms/req"


def row(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<6} {r['ttft_p50_ms']:>11.1f} {r['ttft_p99_ms']:>8.1f} {r['ttft_max_ms']:>8.1f} "
        f"{r['first_mean_ms']:>9.1f} {r['last_mean_ms']:>8.1f} "
        f"{r['frontend_cpu_ms_per_req']:>20.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=16, help="prompts sent at once")
    parser.add_argument("--tokens", type=int, default=6000, help="tokens per prompt")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pause-s", type=float, default=0.3, help="pause between rounds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-peer", action="store_true", help="measure ours only")
    add_common_arguments(parser, speedup=1000.0)
    args = parser.parse_args()

    model_dir = args.model_dir or tiny_model_dir()
    words = vocabulary(model_dir)
    python = find_peer(args.peer_venv, wanted=not args.no_peer)
    print(
        f"burst: {args.rounds} rounds of {args.burst} prompts of {args.tokens} tokens at once, "
        f"1 mocker worker at speedup {args.speedup:g}"
    )
    results: dict[str, Any] = {}
    try:
        results["ours"] = measure("burst-ours", args, model_dir, words, None)
        if python is not None:
            results["peer"] = measure("burst-peer", args, model_dir, words, python)
    except BenchError as e:
        sys.exit(f"error: {e}")
    print(HEADER)
    for name, r in results.items():
        print(row(name, r))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
