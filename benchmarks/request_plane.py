"""Request-plane micro-benchmark: two processes on loopback, TCP transport.

    python benchmarks/request_plane.py [--streams 20000] [--concurrency 64]
        [--long-streams 16] [--frames-per-stream 5000] [--no-uvloop]

Reports streams/s (each stream is one request, one data frame and the final frame, many in
flight at once) and frames/s (a few long streams read concurrently).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime.transport.base import RequestContext
from dynamo.runtime.transport.tcp import TcpRequestClient, TcpRequestServer

TOKEN_FRAME = {"token_ids": [1234], "finish_reason": None}


async def one(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    yield TOKEN_FRAME


async def many(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    for _ in range(request["frames"]):
        yield TOKEN_FRAME


async def serve() -> None:
    server = TcpRequestServer()
    server.register("one", one)
    server.register("many", many)
    print(await server.start(), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until parent exits
    await server.stop(0)


async def bench(address: str, args: argparse.Namespace) -> dict[str, float]:
    client = TcpRequestClient()
    remaining = args.streams

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async for _ in client.stream(address, "one", {"prompt": [1, 2, 3]}, request_id="r"):
                pass

    async def long_stream() -> int:
        n = 0
        request = {"frames": args.frames_per_stream}
        async for _ in client.stream(address, "many", request, request_id="l"):
            n += 1
        return n

    await asyncio.gather(*(worker() for _ in range(8)))  # warm up connections
    remaining = args.streams
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    streams_s = args.streams / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(long_stream() for _ in range(args.long_streams)))
    frames_s = sum(counts) / (time.perf_counter() - t0)
    await client.close()
    return {"streams_per_s": streams_s, "frames_per_s": frames_s}


def run(main: Any, use_uvloop: bool) -> Any:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.run(main)
        except ImportError:
            pass
    return asyncio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--long-streams", type=int, default=16)
    parser.add_argument("--frames-per-stream", type=int, default=5000)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run(serve(), not args.no_uvloop)
        return
    argv = [sys.executable, __file__, "--serve"] + (["--no-uvloop"] if args.no_uvloop else [])
    server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip()
        result = run(bench(address, args), not args.no_uvloop)
    finally:
        server.kill()
        server.wait()
    loop = "asyncio" if args.no_uvloop else "uvloop"
    print(
        f"request plane (tcp, {loop}, {os.cpu_count()} cpus): "
        f"{result['streams_per_s']:,.0f} streams/s (1 frame, concurrency {args.concurrency}); "
        f"{result['frames_per_s']:,.0f} frames/s ({args.long_streams} streams x "
        f"{args.frames_per_stream} frames)"
    )


if __name__ == "__main__":
    main()
