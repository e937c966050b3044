#!/usr/bin/env python3
"""Closed-loop load on any OpenAI-compatible server: C concurrent streams, N requests in all.

    python benchmarks/clients/load.py URL MODEL [--n 2000] [--c 64] [--m 16] [--chat]

Each request is one short prompt and M streamed tokens (`ignore_eos`, `min_tokens`). Prints one
JSON object: requests/s, streamed chunks/s, end-to-end latency p50/p99 and the first errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

PROMPT = "tell me a short story about a cat"


def request(model: str, tokens: int, chat: bool) -> tuple[str, dict[str, Any]]:
    """The path and body every request of a run sends."""
    body: dict[str, Any] = {
        "model": model, "max_tokens": tokens, "stream": True, "ignore_eos": True,
        "min_tokens": tokens,
    }  # fmt: skip
    if chat:
        return "/v1/chat/completions", body | {"messages": [{"role": "user", "content": PROMPT}]}
    return "/v1/completions", body | {"prompt": PROMPT}


async def stream_loop(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], left: list[int],
    done: list[tuple[float, int]], errors: list[str],
) -> None:  # fmt: skip
    """One client stream: take requests until none are left, record latency and chunks."""
    while left:
        left.pop()
        start = time.perf_counter()
        chunks = 0
        try:
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    errors.append(f"http {response.status}: {(await response.text())[:200]}")
                    continue
                async for line in response.content:
                    if line.startswith(b"data:") and b"[DONE]" not in line:
                        chunks += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append(repr(exc))
            continue
        done.append((time.perf_counter() - start, chunks))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    path, body = request(args.model, args.m, args.chat)
    left = list(range(args.n))
    done: list[tuple[float, int]] = []
    errors: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                stream_loop(session, args.url + path, body, left, done, errors)
                for _ in range(args.c)
            )
        )
        wall = time.perf_counter() - t0
    latencies = sorted(latency for latency, _ in done)
    return {
        "ok": len(done), "errors": len(errors), "wall_s": round(wall, 2),
        "req_per_s": round(len(done) / wall, 1),
        "chunks_per_s": round(sum(chunks for _, chunks in done) / wall, 1),
        "lat_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "lat_p99_ms": (
            round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None
        ),
        "first_errors": errors[:3],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("model")
    parser.add_argument("--n", type=int, default=2000, help="requests in all")
    parser.add_argument("--c", type=int, default=64, help="concurrent streams")
    parser.add_argument("--m", type=int, default=16, help="streamed tokens a request")
    parser.add_argument("--chat", action="store_true", help="/v1/chat/completions")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
