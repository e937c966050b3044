"""The frontend process over real worker processes (file discovery, TCP request plane).

`python -m dynamo.frontend` and `python -m dynamo.testing.echo_worker` run as child processes;
a worker is killed with SIGKILL in the middle of 50 streams and every stream still completes.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import openai
import pytest

from dynamo.testing.processes import Procs

pytestmark = pytest.mark.slow


async def test_kill_9_a_worker_mid_stream(procs: Procs) -> None:
    url = await procs.frontend("--migration-limit", "3")
    workers = [await procs.echo_worker(delay_s=0.05) for _ in range(3)]
    await procs.wait_for_instances(url, 3)

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
            # kill while streams are mid-way (on a loaded machine early ones may be done)
            if sum(1 for p in progress if 3 <= p < 30) >= 30:
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
