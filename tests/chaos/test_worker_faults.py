"""Chaos: a worker dies (kill -9) or is stopped (SIGTERM) under steady streaming load through
the frontend. With migration a killed worker loses no request; without migration a drained
worker loses none either (it finishes its streams before it exits)."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import pytest
from _load import CLOSED, ERROR, HUNG, OK, TRUNCATED, report, steady_load

from dynamo.testing.processes import Procs, mocker_args, read_until

pytestmark = pytest.mark.slow
SERVING = re.compile(rb"as instance ([0-9a-f]+) at")
CASE_S = 120  # every case is bounded; each takes ~15-25 s on a loaded 2-core box


async def _workers(procs: Procs, url: str, n: int) -> list[asyncio.subprocess.Process]:
    workers = []
    for _ in range(n):
        proc = await procs.spawn(*mocker_args(model_name="tiny", speedup_ratio=5))
        await read_until(proc, SERVING)
        procs.drain(proc)
        workers.append(proc)
    await procs.wait_for_instances(url, n)
    return workers


async def test_kill_9_of_a_worker_under_load_loses_nothing_with_migration(procs: Procs) -> None:
    async with asyncio.timeout(CASE_S):
        url = await procs.frontend("--migration-limit", "3")
        victim, _ = await _workers(procs, url, 2)
        async with steady_load(url, model="tiny", concurrency=6) as load:
            await load.wait_streaming(12)
            killed = time.monotonic()
            Procs.kill_group(victim)  # SIGKILL: no final frames, no unregistration
            await procs.wait_for_instances(url, 1)
            routed_out_s = time.monotonic() - killed
            await load.wait_streaming(12)
        at_kill = load.counts(killed, killed)  # the requests in flight at that instant
        report(
            "kill -9 worker (migration 3)", load,
            in_flight_at_kill=sum(at_kill.values()), out_of_routing_s=f"{routed_out_s:.2f}",
        )  # fmt: skip
        assert victim.returncode == -signal.SIGKILL
        assert load.counts()[OK] == sum(load.counts().values()), load.details(ERROR)
        assert load.counts()[OK] >= 24


async def test_sigterm_of_a_worker_under_load_drains_without_loss(procs: Procs) -> None:
    async with asyncio.timeout(CASE_S):
        url = await procs.frontend()  # no migration: only the drain can save its streams
        victim, _ = await _workers(procs, url, 2)
        async with steady_load(url, model="tiny", concurrency=6) as load:
            await load.wait_streaming(12)
            signalled = time.monotonic()
            victim.send_signal(signal.SIGTERM)
            await asyncio.wait_for(victim.wait(), 60)
            drained_s = time.monotonic() - signalled
            await procs.wait_for_instances(url, 1)
            await load.wait_streaming(12)
        report(
            "SIGTERM worker (no migration)", load,
            drain_s=f"{drained_s:.2f}", exit_code=victim.returncode,
        )  # fmt: skip
        assert victim.returncode == 0
        counts = load.counts()
        assert counts[ERROR] == counts[CLOSED] == counts[TRUNCATED] == counts[HUNG] == 0, (
            load.details(ERROR) + load.details(CLOSED)
        )
        assert counts[OK] >= 24
