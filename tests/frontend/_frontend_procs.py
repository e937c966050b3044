"""Child processes for frontend integration tests: spawn, read their output, stop them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp

LISTENING = re.compile(rb"frontend listening on (http://\S+)")


class Procs:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.children: list[asyncio.subprocess.Process] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        self.children.append(proc)
        return proc

    async def stop_all(self) -> None:
        for proc in self.children:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.children:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, pattern: re.Pattern[bytes]) -> bytes:
    assert proc.stdout is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise AssertionError(f"process exited before {pattern.pattern!r}:\n{seen.decode()}")
        seen += line
        match = pattern.search(line)
        if match:
            return match.group(1)


async def drain(proc: asyncio.subprocess.Process) -> None:
    """Keep reading a child's output so it never blocks on a full pipe."""
    assert proc.stdout is not None
    while await proc.stdout.read(65536):
        pass


async def start_frontend_process(procs: Procs, *flags: str) -> str:
    """`python -m dynamo.frontend` on a free port; returns its base URL."""
    proc = await procs.spawn(
        "dynamo.frontend", "--http-port", "0", "--http-host", "127.0.0.1", *flags
    )
    url = (await read_until(proc, LISTENING)).decode()
    asyncio.get_running_loop().create_task(drain(proc))
    return url


async def start_worker(procs: Procs, delay_s: float) -> tuple[asyncio.subprocess.Process, int]:
    proc = await procs.spawn("dynamo.testing.echo_worker", "--delay-s", str(delay_s))
    instance = int(await read_until(proc, re.compile(rb"ready ([0-9a-f]+)")), 16)
    asyncio.get_running_loop().create_task(drain(proc))
    return proc, instance


async def wait_for_instances(url: str, n: int) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            async with s.get(url + "/health") as r:
                body = await r.json()
                if len(body.get("instances", [])) == n:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the frontend never saw {n} instances")
