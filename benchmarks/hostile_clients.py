"""Hostile clients against our frontend process: what each costs it, and how long it lasts.

    python benchmarks/hostile_clients.py [--idle 10000] [--loris 1000] [--stalled 20]
        [--stream-tokens 50000] [--timeout-s 30] [--probes 40]

One frontend and one mocker run as processes, with `--http-keepalive-timeout-s`,
`--http-body-timeout-s` and `--http-write-timeout-s` all set to `--timeout-s`. For each attack
the script measures a probe client's latency (sequential 8-token completions on a keep-alive
connection) before and during it, side by side as a ratio, the frontend's open file
descriptors, RSS and CPU, and how long after the attack stopped sending (or started, for idle
connections) the frontend had closed every hostile connection:

- `idle`: N connections opened and never used (keep-alive timeout);
- `loris`: N connections sending a header byte every second, never ending the headers;
- `slow_body`: N requests whose body trickles in, a byte a second (body timeout, 408);
- `read`: the control for `stalled`: N streams of the same length, read to the end;
- `stalled`: N streams whose clients never read (write timeout).

The client side needs `ulimit -n` above N + 100 (it is checked first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from _procs import MODEL_NAME, BenchError, Stack, free_port, tiny_model_dir

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def frontend_stats(stack: Stack) -> dict[str, float]:
    pid = stack.pid("frontend")
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_mib": round(rss_kb / 1024, 1),
        "cpu_s": round(stack.cpu_s("frontend"), 2),
    }


async def probe(url: str, n: int) -> dict[str, float]:
    """Latency of `n` sequential completions (ms): p50 and max; failures counted."""
    body = {"model": MODEL_NAME, "prompt": "hello there", "max_tokens": 8}
    times, failed = [], 0
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(n):
            start = time.perf_counter()
            try:
                async with session.post(url + "/v1/completions", json=body) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                times.append(1000 * (time.perf_counter() - start))
            else:
                failed += 1
    if not times:
        return {"p50_ms": float("nan"), "max_ms": float("nan"), "failed": failed}
    return {
        "p50_ms": round(statistics.median(times), 2),
        "max_ms": round(max(times), 2),
        "failed": failed,
    }


async def open_conns(port: int, n: int, rcvbuf: int | None = None) -> list[Conn]:
    conns: list[Conn] = []

    async def one() -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return await asyncio.open_connection(sock=sock)

    for start in range(0, n, 500):  # under the listen backlog
        conns += await asyncio.gather(*(one() for _ in range(min(500, n - start))))
    return conns


async def until_closed(conns: list[Conn], bound_s: float) -> None:
    """Until the server closed every connection in `conns` (reading what it sends)."""

    async def one(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    await asyncio.wait_for(asyncio.gather(*(one(r) for r, _ in conns)), bound_s)


def head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def drip(conns: list[Conn], piece: bytes, stop: asyncio.Event) -> None:
    """Send `piece` on every connection once a second until `stop`."""
    while not stop.is_set():
        for _, w in conns:
            if not w.is_closing():
                with contextlib.suppress(ConnectionError):
                    w.write(piece)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def attack(
    name: str,
    stack: Stack,
    url: str,
    args: argparse.Namespace,
    n: int,
    setup: Callable[[list[Conn]], Awaitable[asyncio.Task[None] | None]],
    rcvbuf: int | None = None,
) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    before = frontend_stats(stack)
    start = time.monotonic()
    control = name == "read"  # well-behaved clients: the load the streams cost by themselves
    conns = [] if control else await open_conns(port, n, rcvbuf)
    opened_s = time.monotonic() - start
    background = await setup(conns)
    bound_s = args.timeout_s * 20 + 120

    async def all_closed() -> float:
        """Seconds from the start until every hostile connection (or the control) ended."""
        if control and background is not None:
            await asyncio.wait_for(asyncio.shield(background), bound_s)
        else:
            await until_closed(conns, bound_s=bound_s)
        return time.monotonic() - start

    closing = asyncio.create_task(all_closed())  # measured while the probe runs
    await asyncio.sleep(0.5)
    during = frontend_stats(stack)
    lat = await probe(url, args.probes)
    total_s = await closing
    if background is not None:
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
    for _, w in conns:
        w.close()
    await asyncio.sleep(1.0)
    after = frontend_stats(stack)
    return {
        "attack": name,
        "connections": n,
        "open_s": round(opened_s, 2),
        "all_closed_after_s": round(total_s, 2),
        "probe_during": lat,
        "frontend_before": before,
        "frontend_during": during,
        "frontend_after": after,
    }


async def run(stack: Stack, url: str, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"baseline": await probe(url, args.probes)}
    results["frontend_idle"] = frontend_stats(stack)

    async def nothing(conns: list[Conn]) -> None:
        return None

    async def loris(conns: list[Conn]) -> asyncio.Task[None]:
        for _, w in conns:
            w.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\n")
        return asyncio.create_task(drip(conns, b"X", asyncio.Event()))

    async def slow_body(conns: list[Conn]) -> asyncio.Task[None]:
        for _, w in conns:
            w.write(head("/v1/completions", 10_000) + b'{"model": ')
        return asyncio.create_task(drip(conns, b" ", asyncio.Event()))

    stream_body = {
        "model": MODEL_NAME,
        "prompt": "a b c d",
        "max_tokens": args.stream_tokens,
        "stream": True,
    }

    async def stalled(conns: list[Conn]) -> None:
        body = json.dumps(stream_body).encode()
        for _, w in conns:
            w.write(head("/v1/completions", len(body)) + body)  # then never read

    async def read(conns: list[Conn]) -> asyncio.Task[None]:
        async def streams() -> None:
            async with aiohttp.ClientSession() as session:

                async def one() -> None:
                    async with session.post(url + "/v1/completions", json=stream_body) as r:
                        async for _ in r.content.iter_chunked(65536):
                            pass

                await asyncio.gather(*(one() for _ in range(args.stalled)))

        return asyncio.create_task(streams())

    attacks = [
        ("idle", args.idle, nothing, None),
        ("loris", args.loris, loris, None),
        ("slow_body", args.loris, slow_body, None),
        ("read", args.stalled, read, None),
        ("stalled", args.stalled, stalled, 4096),
    ]
    rows = []
    for name, n, setup, rcvbuf in attacks:
        if n <= 0:
            continue
        print(f"{name}: {n} connections ...", file=sys.stderr, flush=True)
        rows.append(await attack(name, stack, url, args, n, setup, rcvbuf))
    results["attacks"] = rows
    return results


def start(args: argparse.Namespace) -> tuple[Stack, str]:
    stack = Stack("hostile")
    timeout = f"{args.timeout_s:g}"
    stack.env.update(
        {
            "DYN_HTTP_KEEPALIVE_TIMEOUT_S": timeout,
            "DYN_HTTP_BODY_TIMEOUT_S": timeout,
            "DYN_HTTP_WRITE_TIMEOUT_S": timeout,
        }
    )
    port = free_port()
    py = sys.executable
    model = tiny_model_dir()
    try:
        stack.spawn("mocker", [
            py, "-m", "dynamo.mocker", "--model-path", model, "--model-name", MODEL_NAME,
            "--speedup-ratio", "1000", "--max-model-len", "200000",
        ])  # fmt: skip
        stack.spawn("frontend", [
            py, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
        ])  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        stack.wait_ready(url)
    except BaseException:
        stack.close()
        raise
    return stack, url


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    base = results["baseline"]
    idle = results["frontend_idle"]
    print(f"timeouts {args.timeout_s:g} s; client ulimit -n {args.nofile}")
    print(
        f"baseline probe p50 {base['p50_ms']} ms max {base['max_ms']} ms; frontend "
        f"{idle['fds']} fds, {idle['rss_mib']} MiB"
    )
    cols = "attack conns open_s closed_after_s probe_p50_ms ratio max_ms failed fds rss_mib"
    print(cols.replace(" ", "\t"))
    for row in results["attacks"]:
        p, d = row["probe_during"], row["frontend_during"]
        ratio = p["p50_ms"] / base["p50_ms"] if base["p50_ms"] else float("nan")
        print(
            "\t".join(
                str(v)
                for v in (
                    row["attack"],
                    row["connections"],
                    row["open_s"],
                    row["all_closed_after_s"],
                    p["p50_ms"],
                    f"{ratio:.2f}",
                    p["max_ms"],
                    p["failed"],
                    d["fds"],
                    d["rss_mib"],
                )
            )
        )
        print(f"\tafter: {row['frontend_after']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--loris", type=int, default=1000, help="also the slow-body count")
    parser.add_argument("--stalled", type=int, default=20, help="also the reading control")
    parser.add_argument("--stream-tokens", type=int, default=50_000)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.idle, args.loris, args.stalled) + 100
    if soft < need:
        if hard < need:
            raise BenchError(f"ulimit -n is {soft} (hard {hard}); {need} needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    args.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    stack, url = start(args)
    with stack:
        results = asyncio.run(run(stack, url, args))
    results["timeout_s"] = args.timeout_s
    print_table(results, args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
