"""Replica sync: two KV policies share active sequences over a real ZMQ event plane."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dynamo.router.active_sequences import ActiveSequenceEvent
from dynamo.router.base import RouteRequest, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.replica_sync import ReplicaSync, replica_sync_topic
from dynamo.router.service import RouterService, StandaloneRouterConfig
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.transport.base import RequestContext

WORKER, PROBE = 7, 99  # the worker under test; a second one that only carries warm-up traffic


async def idle(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    yield {}


class Replica:
    def __init__(self, runtime: DistributedRuntime, topic: str) -> None:
        self.runtime = runtime
        self.policy = KvPolicy(RouterConfig(router_mode="kv", router_replica_sync=True))
        for worker in (WORKER, PROBE):
            self.policy.add_worker(WorkerInfo(worker, kv_block_size=16))
        self.sync = ReplicaSync(topic)
        self.sync.attach(self.policy)

    def load(self) -> tuple[int, int]:
        stats = self.policy.stats()
        key = (WORKER, 0)
        return stats.active_decode_blocks[key], stats.active_prefill_tokens[key]

    def route(self, request_id: str, tokens: list[int], worker: int = WORKER) -> None:
        self.policy.select(RouteRequest(request_id, tokens, backend_instance_id=worker))


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Replica, Replica]]:
    config = RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")
    topic = replica_sync_topic(config.namespace, "router")
    pair = []
    for _ in range(2):
        replica = Replica(await DistributedRuntime.create(config), topic)
        await replica.sync.start(replica.runtime)
        pair.append(replica)
    yield pair[0], pair[1]
    for replica in pair:
        await replica.sync.close()
        await replica.runtime.shutdown(0)


async def eventually(check: Callable[[], Any], timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def warm_up(sender: Replica, receiver: Replica) -> None:
    """Pub/sub drops messages until the subscription is live: send probes until one lands."""
    for i in range(2000):
        sender.route(f"probe-{i}", [i] * 16, worker=PROBE)
        await asyncio.sleep(0.01)
        if receiver.sync.stats.applied:
            return
    raise AssertionError("no replica-sync event ever arrived")


async def test_each_replica_sees_the_load_the_other_books(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await warm_up(a, b)
    await warm_up(b, a)

    a.route("r1", list(range(64)))  # 4 blocks, 64 tokens to prefill
    await eventually(lambda: b.load() == (4, 64))
    b.route("r2", [*range(32), *range(100, 132)])  # shares 2 blocks with r1
    await eventually(lambda: a.load() == (6, 128))
    assert b.load() == (6, 128)

    a.policy.on_first_token("r1")
    await eventually(lambda: b.load() == (6, 64))
    a.policy.on_finish("r1")
    await eventually(lambda: b.load() == (4, 64))
    b.policy.on_finish("r2")
    await eventually(lambda: a.load() == (0, 0))
    assert b.load() == (0, 0)
    # each replica received its own events too (one topic) and ignored them
    assert a.sync.stats.malformed == b.sync.stats.malformed == 0


async def test_own_and_malformed_events_are_ignored() -> None:
    sync = ReplicaSync("ns.router.active_sequences_events", max_pending=1)
    policy = KvPolicy(RouterConfig(router_mode="kv", router_replica_sync=True))
    policy.add_worker(WorkerInfo(WORKER, kv_block_size=16))
    sync.attach(policy)
    own = ActiveSequenceEvent(policy.router_id, "r", WORKER, 0, "add", (1, 2), 32, 0)
    other = ActiveSequenceEvent("other-router", "s", WORKER, 0, "add", (1, 2), 32, 0)
    sync.apply(own.to_wire())
    sync.apply({"kind": "explode"})
    assert policy.stats().active_decode_blocks[(WORKER, 0)] == 0
    sync.apply({**other.to_wire(), "seq": 5})
    assert policy.stats().active_decode_blocks[(WORKER, 0)] == 2
    assert (sync.stats.applied, sync.stats.malformed) == (1, 1)

    policy.select(RouteRequest("mine", [1] * 32))  # queued for the event plane
    assert (sync.pending, sync.stats.published, sync.stats.dropped) == (1, 0, 0)
    policy.on_finish("mine")  # the queue is full (not started): dropped, not blocking
    assert (sync.pending, sync.stats.dropped) == (1, 1)
    sync.detach(policy)
    policy.select(RouteRequest("unsynced", [2] * 32))
    assert (sync.pending, sync.stats.dropped) == (1, 1)


async def test_two_router_services_with_replica_sync_share_bookings() -> None:
    config = RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")
    router_config = RouterConfig(router_mode="kv", router_replica_sync=True, kv_cache_block_size=16)
    worker_rt = await DistributedRuntime.create(config)
    address = StandaloneRouterConfig().worker_address(config.namespace)
    await worker_rt.serve_endpoint(address, idle, instance_id=WORKER)
    services = []
    for _ in range(2):
        service = RouterService(
            await DistributedRuntime.create(config), router_config, StandaloneRouterConfig()
        )
        await service.start()
        services.append(service)
    a, b = services
    try:
        assert a.sync is not None and b.sync is not None
        assert isinstance(b.policy, KvPolicy)
        b_policy = b.policy

        async def book(rid: str) -> dict[str, Any]:
            body = {"token_ids": list(range(64)), "request_id": rid}
            return await anext(a.best_worker(body, RequestContext(rid)))

        booked: list[str] = []
        while not b.sync.stats.applied:  # until the subscription is live (pub/sub drops before)
            booked.append(f"r{len(booked)}")
            decision = await book(booked[-1])
            assert decision == {
                "instance_id": WORKER,
                "dp_rank": 0,
                "overlap_blocks": 0,
                "required_blocks": 4,
            }
            await asyncio.sleep(0.01)
        await eventually(lambda: b_policy.stats().active_decode_blocks[(WORKER, 0)] == 4)
        for rid in booked:
            done = {"request_id": rid, "event": "finish"}
            assert await anext(a.mark(done, RequestContext(rid))) == done
        await eventually(lambda: b_policy.stats().active_decode_blocks[(WORKER, 0)] == 0)
    finally:
        for service in services:
            await service.close()
            await service.runtime.shutdown(0)
        await worker_rt.shutdown(0)
