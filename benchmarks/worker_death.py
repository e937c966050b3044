"""How fast the frontend drops a worker killed with SIGKILL, and what watching peers costs.

    python benchmarks/worker_death.py [--trials 5] [--backends etcd,file] [--idle-peers 300]

Detection: a frontend process and two mocker processes (etcd discovery with a 10 s lease,
or file discovery); each trial kills one mocker with SIGKILL and times kill → the frontend's
`/health` no longer lists it (polled every 10 ms), then starts a replacement. Once with peer
watching on (`DYN_PEER_KEEPALIVE_S=1`, the default) and once off (`0`: discovery only).

Idle cost: `--idle-peers N` TCP request-plane servers and one `PeerWatch` holding an idle
keepalive connection to each, in this process; reports the CPU the process used over 10 s
of idling and the RSS the connections added.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import time

import aiohttp

from dynamo.runtime.transport.peer_watch import PeerWatch
from dynamo.runtime.transport.tcp import TcpRequestServer
from dynamo.testing.processes import Procs, mocker_args, read_until
from dynamo.testing.servers import EtcdServer

SERVING = re.compile(rb"as instance ([0-9a-f]+) at")


async def spawn_mocker(procs: Procs) -> tuple[object, int]:
    proc = await procs.spawn(*mocker_args(model_name="tiny"))
    instance_id = int(await read_until(proc, SERVING), 16)
    procs.drain(proc)
    return proc, instance_id


async def routed(session: aiohttp.ClientSession, url: str) -> set[int]:
    async with session.get(url + "/health") as r:
        return {i["instance_id"] for i in (await r.json())["instances"]}


async def detection_times(env: dict[str, str], trials: int) -> list[float]:
    procs = Procs(env)
    times = []
    try:
        url = await procs.frontend()
        workers = [await spawn_mocker(procs) for _ in range(2)]
        await procs.wait_for_instances(url, 2)
        async with aiohttp.ClientSession() as session:
            for _ in range(trials):
                proc, instance_id = workers.pop(0)
                start = time.perf_counter()
                Procs.kill_group(proc)  # type: ignore[arg-type]
                while True:  # poll: the frontend's /health is the thing measured
                    if instance_id not in await routed(session, url):
                        break
                    await asyncio.sleep(0.01)
                times.append(time.perf_counter() - start)
                workers.append(await spawn_mocker(procs))
                await procs.wait_for_instances(url, 2)
    finally:
        await procs.stop_all()
    return times


async def idle_cost(n: int, idle_s: float = 10.0) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    servers = [TcpRequestServer() for _ in range(n)]
    addresses = [await s.start() for s in servers]
    watch = PeerWatch(keepalive_s=1)
    for address in addresses:
        watch.watch(address)
    for _ in range(1200):
        if sum(len(s._connections) for s in servers) >= n:
            break
        await asyncio.sleep(0.05)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.sleep(idle_s)
    usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    print(
        f"idle cost, {n} watched peers (both ends in this process): "
        f"CPU {cpu * 1000:.1f} ms over {wall1 - wall0:.1f} s ({cpu / (wall1 - wall0):.2%} of a "
        f"core), max RSS +{(rss_after - rss_before) / 1024:.1f} MB for {n} servers + watches"
    )
    await watch.close()
    for s in servers:
        await s.stop(0)


def summary(times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return (
        f"median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms "
        f"({', '.join(f'{m:.0f}' for m in ms)})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--off-trials", type=int, default=2, help="trials with watching off")
    parser.add_argument("--backends", default="etcd,file")
    parser.add_argument("--idle-peers", type=int, default=300)
    args = parser.parse_args()
    if args.idle_peers:
        await idle_cost(args.idle_peers)
    for backend in [b for b in args.backends.split(",") if b]:
        etcd = EtcdServer() if backend == "etcd" else None
        try:
            env = {"DYN_DISCOVERY_BACKEND": backend}
            if etcd is not None:
                etcd.start()
                env["ETCD_ENDPOINTS"] = etcd.url
            for keepalive, trials in (("1", args.trials), ("0", args.off_trials)):
                if trials <= 0:
                    continue
                times = await detection_times({**env, "DYN_PEER_KEEPALIVE_S": keepalive}, trials)
                mode = "peer watch on " if keepalive == "1" else "discovery only"
                print(f"{backend:5} {mode}: kill -9 -> out of routing: {summary(times)}")
        finally:
            if etcd is not None:
                etcd.close()


if __name__ == "__main__":
    asyncio.run(main())
