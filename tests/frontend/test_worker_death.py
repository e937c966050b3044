"""A worker killed with SIGKILL leaves the frontend's routing through the request plane.

A frontend process and two mocker processes over real etcd (10 s lease) or file discovery:
after `kill -9` of one mocker, idle or streaming, the frontend's `/health` lists only the other
while etcd still holds the dead one's key (so the request plane removed it, not discovery),
and every new request succeeds.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import openai
import pytest

from dynamo.runtime.discovery.etcd import EtcdDiscovery
from dynamo.testing.processes import Procs, mocker_args, read_until
from dynamo.testing.servers import EtcdServer

pytestmark = pytest.mark.slow

SERVING = re.compile(rb"as instance ([0-9a-f]+) at")
_LOST = re.compile(r'^dynamo_frontend_model_workers_lost_total\{model="tiny"\} (\S+)$', re.M)


async def start_stack(procs: Procs, *frontend_args: str) -> tuple[str, list[tuple[object, int]]]:
    """A frontend and two mockers; returns the frontend URL and (process, instance id) pairs."""
    url = await procs.frontend("--migration-limit", "3", *frontend_args)
    workers = []
    for _ in range(2):
        proc = await procs.spawn(*mocker_args(model_name="tiny", speedup_ratio=5))
        instance_id = int(await read_until(proc, SERVING), 16)
        procs.drain(proc)
        workers.append((proc, instance_id))
    await procs.wait_for_instances(url, 2)
    return url, workers


async def routed_ids(url: str) -> list[int]:
    async with aiohttp.ClientSession() as s, s.get(url + "/health") as r:
        return sorted(i["instance_id"] for i in (await r.json())["instances"])


async def wait_routed(url: str, expected: list[int], timeout_s: float = 30.0) -> None:
    """Poll `/health` until it routes to exactly `expected` (generous bound)."""
    for _ in range(int(timeout_s / 0.02)):
        if await routed_ids(url) == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the frontend never routed to exactly {expected}")


async def workers_lost_total(url: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        found = _LOST.findall(await r.text())
    return float(found[0]) if found else 0.0


async def etcd_instance_ids(etcd: EtcdServer) -> set[int]:
    discovery = EtcdDiscovery(etcd.url)
    await discovery.start()
    try:
        keys = await discovery.get_prefix("v1/instances/")
    finally:
        await discovery.close()
    return {int(k.rsplit("/", 1)[1], 16) for k in keys}


async def all_succeed(client: openai.AsyncOpenAI, n: int) -> list[str | None]:
    async def one(i: int) -> str | None:
        resp = await client.completions.create(model="tiny", prompt=f"req {i}", max_tokens=3)
        return resp.choices[0].finish_reason

    return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize("router_mode", ["kv", "random"])
async def test_idle_worker_killed_leaves_routing_before_its_etcd_lease_expires(
    etcd_server: EtcdServer, router_mode: str
) -> None:
    procs = Procs({"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_server.url})
    client = None
    try:
        url, [(dead, dead_id), (_, live_id)] = await start_stack(
            procs, "--router-mode", router_mode
        )
        Procs.kill_group(dead)  # type: ignore[arg-type]
        await wait_routed(url, [live_id])
        assert dead_id in await etcd_instance_ids(etcd_server)  # its lease has not expired
        assert await workers_lost_total(url) == 1
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert await all_succeed(client, 8) == ["length"] * 8
    finally:
        if client is not None:
            await client.close()
        await procs.stop_all()


async def test_streaming_worker_killed_streams_migrate_and_it_leaves_routing(
    etcd_server: EtcdServer,
) -> None:
    procs = Procs({"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_server.url})
    client = None
    try:
        url, [(dead, dead_id), (_, live_id)] = await start_stack(
            procs, "--router-mode", "round-robin"
        )
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        first_chunks = asyncio.Event()
        started = 0

        async def stream(i: int) -> int:
            nonlocal started
            chunks = await client.completions.create(
                model="tiny",
                prompt=f"stream {i}",
                max_tokens=60,
                stream=True,
                stream_options={"include_usage": True},
            )
            usage, counted = None, False
            async for chunk in chunks:
                if not counted:
                    counted, started = True, started + 1
                    if started == 2:
                        first_chunks.set()
                usage = chunk.usage or usage
            assert usage is not None
            return usage.completion_tokens

        # round-robin: one stream on each worker
        streams = [asyncio.create_task(stream(i)) for i in range(2)]
        await asyncio.wait_for(first_chunks.wait(), 60)
        Procs.kill_group(dead)  # type: ignore[arg-type]
        assert await asyncio.gather(*streams) == [60, 60]
        await wait_routed(url, [live_id])
        assert dead_id in await etcd_instance_ids(etcd_server)
        assert await all_succeed(client, 8) == ["length"] * 8
    finally:
        if client is not None:
            await client.close()
        await procs.stop_all()


async def test_killed_worker_leaves_routing_with_file_discovery() -> None:
    # File discovery on one host also notices the dead pid (at its ~0.2 s poll), so either
    # path may win here; across hosts only the heartbeat TTL would.
    procs = Procs({"DYN_DISCOVERY_BACKEND": "file"})
    client = None
    try:
        url, [(dead, _), (_, live_id)] = await start_stack(procs, "--router-mode", "round-robin")
        Procs.kill_group(dead)  # type: ignore[arg-type]
        await wait_routed(url, [live_id])
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert await all_succeed(client, 8) == ["length"] * 8
    finally:
        if client is not None:
            await client.close()
        await procs.stop_all()
