"""Kubernetes discovery load: API writes and watch events per minute in steady state, for
processes outside pods (heartbeat liveness) and in pods (readiness liveness), side by side.

    .venv/bin/python benchmarks/k8s_discovery_load.py [--workers 200] [--watchers 10]
        [--window-s 30] [--ttl-s 10]

Runs against the in-memory fake API server (`dynamo.testing.kube_api`) with the test
EndpointSlice controller, which counts every write it receives and every watch event it
streams. Each of `--workers` discovery clients registers three keys (instance, model card,
event publisher) like a worker; each of `--watchers` clients watches `v1/` like a frontend.
After every watcher sees every key, the counters run for `--window-s`. Then, in the readiness
mode, one pod restarts (NotReady, its process rewrites its record, Ready) to show what an
event costs there. Everything runs in this one process (the numbers are counts, not speed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from lightkube import KubeConfig

from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.discovery.kubernetes import KubernetesDiscovery, PodIdentity
from dynamo.testing.kube_api import FakeKubeApi, KubeHttp, fake_kube_api
from dynamo.testing.kube_endpoints import CountingKubeApi, FakePods, endpoint_slice_controller

NS = "bench"
DISCOVERY_KINDS = ("configmaps", "endpointslices")
KEYS_PER_WORKER = 3


def kubeconfig(url: str) -> Any:
    return KubeConfig.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": url.rstrip("/")}}],
            "users": [{"name": "bench", "user": {"token": "t"}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "bench", "namespace": NS}}
            ],
            "current-context": "fake",
        }
    )


@dataclass
class Watcher:
    discovery: KubernetesDiscovery
    keys: set[str] = field(default_factory=set)
    events: int = 0
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with contextlib.aclosing(self.discovery.watch_prefix("v1/")) as stream:
            async for event in stream:
                self._apply(event)

    def _apply(self, event: WatchEvent) -> None:
        self.events += 1
        if event.kind == "put":
            self.keys.add(event.key)
        else:
            self.keys.discard(event.key)


@dataclass
class Result:
    mode: str
    registration_writes: int  # to the record of one worker registering its three keys
    writes: collections.Counter[str]
    events: collections.Counter[str]
    window_s: float
    min_visible: int
    restart: tuple[collections.Counter[str], collections.Counter[str]] | None = None

    def per_min(self, counter: collections.Counter[str], kinds: tuple[str, ...] = ()) -> float:
        total = sum(v for k, v in counter.items() if not kinds or k in kinds)
        return total * 60 / self.window_s


async def start_all(items: list[KubernetesDiscovery], batch: int = 20) -> None:
    for i in range(0, len(items), batch):
        await asyncio.gather(*(d.start() for d in items[i : i + batch]))


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[tuple[CountingKubeApi, FakePods]]:
    async with (
        fake_kube_api(with_dynamo_crds=False, api_type=CountingKubeApi) as api,
        endpoint_slice_controller(api),
        aiohttp.ClientSession(base_url=str(api.url)) as session,
    ):
        assert isinstance(api, CountingKubeApi)
        pods = FakePods(KubeHttp(session), NS)
        await pods.service()
        yield api, pods


def snapshot(api: CountingKubeApi) -> tuple[collections.Counter[str], collections.Counter[str]]:
    return collections.Counter(api.writes), collections.Counter(api.watch_events)


async def wait_for(predicate: Any, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def run_mode(mode: str, args: argparse.Namespace) -> Result:
    in_pods = mode == "readiness"
    async with cluster() as (api, pods):
        config = kubeconfig(str(api.url))

        async def client(name: str) -> KubernetesDiscovery:
            pod = await pods.create(name, ready=True) if in_pods else None
            return KubernetesDiscovery(kubeconfig=config, ttl_s=args.ttl_s, pod=pod)

        workers = [await client(f"worker-{i}") for i in range(args.workers)]
        watchers = [Watcher(await client(f"frontend-{i}")) for i in range(args.watchers)]
        await start_all([w.discovery for w in watchers] + workers)
        for i, worker in enumerate(workers):
            for root in ("v1/instances/ns/backend/generate", "v1/mdc/ns/backend/generate",
                         "v1/events/ns"):  # fmt: skip
                await worker.put(f"{root}/{i:x}", {"worker": i, "port": 9000 + i})
        await asyncio.gather(*(w.flush() for w in workers))
        total = args.workers * KEYS_PER_WORKER
        for watcher in watchers:
            watcher.task = asyncio.create_task(watcher.run())
        await wait_for(lambda: all(len(w.keys) == total for w in watchers), "every key")
        await asyncio.sleep(2.0)  # let the initial listing settle
        start_writes, start_events = snapshot(api)
        min_visible, deadline = total, time.monotonic() + args.window_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            min_visible = min(min_visible, *(len(w.keys) for w in watchers))
        end_writes, end_events = snapshot(api)
        # one more worker registering back to back: what a registration writes to its record
        extra = await client("worker-extra")
        await extra.start()
        for root in ("v1/instances/ns/backend/generate", "v1/mdc/ns/backend/generate",
                     "v1/events/ns"):  # fmt: skip
            await extra.put(f"{root}/e0", {"worker": "extra"})
        await extra.flush()
        registration_writes = api.object_writes["configmaps", extra.name]
        await extra.close()
        await wait_for(lambda: all(len(w.keys) == total for w in watchers), "the extra gone")
        result = Result(
            mode, registration_writes, end_writes - start_writes, end_events - start_events,
            args.window_s, min_visible,
        )  # fmt: skip
        if in_pods:
            result.restart = await restart_one(api, pods, workers, watchers, config, args)
        for watcher in watchers:
            if watcher.task is not None:
                watcher.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher.task
        await asyncio.gather(*(d.close() for d in workers + [w.discovery for w in watchers]))
        return result


async def restart_one(
    api: CountingKubeApi,
    pods: FakePods,
    workers: list[KubernetesDiscovery],
    watchers: list[Watcher],
    config: Any,
    args: argparse.Namespace,
) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """A container restart in pod worker-0: NotReady, a new process rewrites the record with
    a new instance id, Ready again. Returns the writes and watch events it cost."""
    total = args.workers * KEYS_PER_WORKER
    start_writes, start_events = snapshot(api)
    await pods.set_ready("worker-0", False)
    await wait_for(lambda: all(len(w.keys) == total - 3 for w in watchers), "worker-0 hidden")
    # kill -9 of the old process: in a pod it writes nothing on its own, so leaving it idle
    # (closed only at the end) is the same to the API server
    pod = PodIdentity("worker-0", await pod_uid(api, "worker-0"))
    new = KubernetesDiscovery(kubeconfig=config, ttl_s=args.ttl_s, pod=pod)
    await new.start()
    for key in ("v1/instances/ns/backend/generate/abc0", "v1/mdc/ns/backend/generate/abc0",
                "v1/events/ns/abc0"):  # fmt: skip
        await new.put(key, {"worker": 0})
    await new.flush()
    await pods.set_ready("worker-0", True)
    await wait_for(lambda: all(len(w.keys) == total for w in watchers), "worker-0 back")
    await asyncio.sleep(1.0)
    end_writes, end_events = snapshot(api)
    workers.append(new)
    return end_writes - start_writes, end_events - start_events


async def pod_uid(api: FakeKubeApi, name: str) -> str:
    for resource, namespace, obj_name, body in api.live_objects():
        if resource.plural == "pods" and namespace == NS and obj_name == name:
            return str(body["metadata"]["uid"])
    raise SystemExit(f"no pod {name}")


def fmt(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()) if v) or "none"


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"workers {args.workers} (3 keys each), watchers {args.watchers}, ttl {args.ttl_s:g} s, "
          f"steady window {args.window_s:g} s, namespace-wide objects")  # fmt: skip
    header = f"{'liveness':<10} {'writes/reg.':>11} {'writes/min':>11} {'events/min':>11}  min keys"
    print(header)
    for r in results:
        print(
            f"{r.mode:<10} {r.registration_writes:>11} {r.per_min(r.writes):>11.0f} "
            f"{r.per_min(r.events, DISCOVERY_KINDS):>11.0f}  {r.min_visible}/"
            f"{args.workers * KEYS_PER_WORKER}"
        )
    heartbeat, readiness = results
    clients = args.workers + args.watchers
    print(f"(heartbeat writes/min if every renewal came on time, every TTL/3: "
          f"{clients * 60 / (args.ttl_s / 3):.0f})")  # fmt: skip
    for what, a, b in (
        ("writes", heartbeat.per_min(heartbeat.writes), readiness.per_min(readiness.writes)),
        (
            "watch events",
            heartbeat.per_min(heartbeat.events, DISCOVERY_KINDS),
            readiness.per_min(readiness.events, DISCOVERY_KINDS),
        ),
    ):
        ratio = f"{a / b:.0f}x" if b else f"inf (readiness: 0, heartbeat: {a:.0f})"
        print(f"steady-state {what} per minute, heartbeat / readiness: {ratio}")
    if readiness.restart is not None:
        writes, events = readiness.restart
        restart_writes = sum(writes.values())
        restart_events = sum(events[k] for k in DISCOVERY_KINDS)
        print(f"one pod restart (readiness): writes {restart_writes} ({fmt(writes)}); "
              f"discovery watch events {restart_events} "
              f"({fmt(collections.Counter({k: events[k] for k in DISCOVERY_KINDS}))})")  # fmt: skip
        by_writes = heartbeat.per_min(heartbeat.writes) / restart_writes
        by_events = heartbeat.per_min(heartbeat.events, DISCOVERY_KINDS) / restart_events
        print(
            f"readiness costs what heartbeats cost only at {by_writes:.0f} pod restarts/min "
            f"(writes) and {by_events:.0f} pod restarts/min (watch events)"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--ttl-s", type=float, default=10.0)
    args = parser.parse_args()
    if args.workers < 1 or args.watchers < 1 or args.window_s <= 0 or args.ttl_s <= 0:
        parser.error("--workers and --watchers must be >= 1, --window-s and --ttl-s > 0")
    results = [await run_mode(mode, args) for mode in ("heartbeat", "readiness")]
    report(results, args)


if __name__ == "__main__":
    asyncio.run(main())
