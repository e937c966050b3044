"""Chaos: etcd (etcd discovery) and NATS (NATS request and event planes) are killed and
restarted under steady streaming load through the frontend. In-flight requests finish or fail
cleanly (never hang, never a truncated stream), new requests are served again within a
stated time, and neither the frontend nor the workers are restarted."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from _load import CLOSED, ERROR, HUNG, OK, TRUNCATED, report, steady_load

from dynamo.runtime.discovery.etcd import EtcdDiscovery
from dynamo.testing.processes import Procs, mocker_args, read_until
from dynamo.testing.servers import EtcdServer, NatsServer

pytestmark = pytest.mark.slow
SERVING = re.compile(rb"as instance ([0-9a-f]+) at")
CASE_S = 150
DOWN_S = 2.0
RECOVERY_BOUND_S = 30.0  # the stated bound: served again within this after the restart


async def _stack(procs: Procs, *args: str) -> tuple[str, list[asyncio.subprocess.Process]]:
    url = await procs.frontend("--router-mode", "kv", *args)
    workers = []
    for _ in range(2):
        proc = await procs.spawn(*mocker_args(*args, model_name="tiny", speedup_ratio=5))
        await read_until(proc, SERVING)
        procs.drain(proc)
        workers.append(proc)
    await procs.wait_for_instances(url, 2)
    return url, workers


async def _registered(etcd: EtcdServer) -> int:
    discovery = EtcdDiscovery(etcd.url)
    await discovery.start()
    try:
        return len(await discovery.get_prefix("v1/instances/"))
    finally:
        await discovery.close()


async def _wait_registered(etcd: EtcdServer, n: int) -> None:
    for _ in range(int(RECOVERY_BOUND_S / 0.1)):
        if await _registered(etcd) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{n} workers not registered in etcd {RECOVERY_BOUND_S} s after restart")


@pytest.mark.parametrize("wipe", [False, True], ids=["same-data", "data-lost"])
async def test_etcd_killed_and_restarted_under_load(etcd_server: EtcdServer, wipe: bool) -> None:
    procs = Procs({"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_server.url})
    try:
        async with asyncio.timeout(CASE_S):
            url, workers = await _stack(procs)
            async with steady_load(url, model="tiny", concurrency=6) as load:
                await load.wait_streaming(12)
                killed = time.monotonic()
                await asyncio.to_thread(etcd_server.restart, kill=True, wipe=wipe, down_s=DOWN_S)
                restarted = time.monotonic()
                served_s = await load.wait_served(restarted, RECOVERY_BOUND_S)
                await _wait_registered(etcd_server, 2)
                registered_s = time.monotonic() - restarted
                await load.wait_streaming(12)
            outage = load.counts(killed, restarted)
            report(
                f"etcd kill -9 + restart ({'data lost' if wipe else 'same data'})", load,
                during_outage=dict(outage), served_again_s=f"{served_s:.2f}",
                workers_registered_again_s=f"{registered_s:.2f}",
            )  # fmt: skip
            counts = load.counts()
            assert counts[HUNG] == counts[TRUNCATED] == counts[CLOSED] == 0, load.details(CLOSED)
            assert counts[OK] == sum(counts.values())  # TCP request plane: etcd is not in the path
            assert all(w.returncode is None for w in [*workers, *procs.children])
            await procs.wait_for_instances(url, 2)
    finally:
        await procs.stop_all()


async def test_nats_killed_and_restarted_under_load(nats_server: NatsServer) -> None:
    planes = ("--request-plane", "nats", "--event-plane", "nats", "--nats-server", nats_server.url)
    procs = Procs()
    try:
        async with asyncio.timeout(CASE_S):
            url, _ = await _stack(procs, *planes)
            async with steady_load(url, model="tiny", concurrency=6) as load:
                await load.wait_streaming(12)
                killed = time.monotonic()
                await asyncio.to_thread(nats_server.restart, kill=True, down_s=DOWN_S)
                restarted = time.monotonic()
                served_s = await load.wait_served(restarted, RECOVERY_BOUND_S)
                await load.wait_streaming(12)
            outage = load.counts(killed, restarted)
            report(
                "NATS kill -9 + restart (request + event planes)", load,
                during_outage=dict(outage), served_again_s=f"{served_s:.2f}",
                errors=load.details(ERROR)[:2],
            )  # fmt: skip
            counts = load.counts()
            # in-flight requests may fail, but only with an OpenAI error: never hung or cut off
            assert counts[HUNG] == counts[TRUNCATED] == counts[CLOSED] == 0, load.details(CLOSED)
            assert all(p.returncode is None for p in procs.children)
            await procs.wait_for_instances(url, 2)
    finally:
        await procs.stop_all()
