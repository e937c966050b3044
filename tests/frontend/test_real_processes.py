"""The frontend process over real worker processes (file discovery, TCP request plane).

`python -m dynamo.frontend` and `python -m dynamo.testing.echo_worker` run as child processes;
a worker is killed with SIGKILL in the middle of 50 streams and every stream still completes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

pytestmark = pytest.mark.slow

_LISTENING = re.compile(rb"frontend listening on (http://\S+)")


class Procs:
    def __init__(self) -> None:
        self.children: list[asyncio.subprocess.Process] = []

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
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


@pytest.fixture
async def procs() -> AsyncIterator[Procs]:
    p = Procs()
    yield p
    await p.stop_all()


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


async def test_kill_9_a_worker_mid_stream(procs: Procs) -> None:
    frontend = await procs.spawn(
        "dynamo.frontend",
        "--http-port",
        "0",
        "--http-host",
        "127.0.0.1",
        "--migration-limit",
        "3",
    )
    url = (await read_until(frontend, _LISTENING)).decode()
    asyncio.get_running_loop().create_task(drain(frontend))
    workers = [await start_worker(procs, delay_s=0.01) for _ in range(3)]
    await wait_for_instances(url, 3)

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    progress = [0] * 50

    async def one(i: int) -> tuple[int, str]:
        stream = await client.completions.create(
            model="tiny",
            prompt=f"request number {i} says hello",
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].text)
                progress[i] += 1
            usage = chunk.usage or usage
        assert usage is not None
        return usage.completion_tokens, "".join(text)

    try:
        tasks = [asyncio.create_task(one(i)) for i in range(50)]
        for _ in range(600):
            if sum(1 for p in progress if p >= 3) >= 40:
                break
            await asyncio.sleep(0.02)
        victim, _ = workers[0]
        victim.kill()  # SIGKILL: no final frames, no unregistration
        results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    finally:
        await client.close()
    assert [n for n, _ in results] == [30] * 50
    assert all(text for _, text in results)
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        metrics = await r.text()
    migrated = re.search(
        r'dynamo_frontend_model_migration_total\{migration_type="ongoing_request",model="tiny"\} '
        r"(\d+)",
        metrics,
    )
    assert migrated is not None and int(migrated.group(1)) >= 1
