"""router/feeds.py: a policy's workers follow discovery; worker events reach the policy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dynamo.protocols.kv_events import (
    KvCacheEvent,
    KvStored,
    LoadMetrics,
    RouterEvent,
    StoredBlock,
)
from dynamo.protocols.model_card import ModelCard
from dynamo.router.base import RoutingPolicy, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.feeds import EndpointWorkers, dispatch_worker_event, worker_events_prefix
from dynamo.router.kv_policy import KvPolicy
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.transport.base import RequestContext


async def idle(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    yield {}


@pytest.fixture
async def runtime() -> AsyncIterator[DistributedRuntime]:
    config = RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")
    rt = await DistributedRuntime.create(config)
    yield rt
    await rt.shutdown(0)


async def eventually(check: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def test_workers_need_an_instance_and_a_card(runtime: DistributedRuntime) -> None:
    ns = runtime.config.namespace
    address = EndpointAddress(ns, "prefill", "generate")
    policy = KvPolicy(RouterConfig(router_mode="kv"))
    feed = EndpointWorkers(runtime, address, policy)
    await feed.start()
    card = ModelCard.model_validate(
        {"name": "m", "kv_block_size": 32, "total_kv_blocks": 100, "data_parallel_size": 2}
    )
    with_card = await runtime.serve_endpoint(address, idle, model_card=card, instance_id=11)
    bare = await runtime.serve_endpoint(address, idle, instance_id=12)
    elsewhere = EndpointAddress(ns, "backend", "generate")
    await runtime.serve_endpoint(elsewhere, idle, model_card=card, instance_id=13)

    await eventually(lambda: policy.workers() == [11])
    assert feed.workers() == [WorkerInfo(11, 32, 100, 2)]
    assert sorted(policy.stats().active_decode_blocks) == [(11, 0), (11, 1)]
    assert sorted(feed.client.instance_ids()) == [11, 12]

    await with_card.unregister()
    await eventually(lambda: policy.workers() == [])
    assert feed.workers() == []
    await bare.unregister()
    await feed.close()


async def test_a_router_block_size_stands_in_for_the_card(runtime: DistributedRuntime) -> None:
    address = EndpointAddress(runtime.config.namespace, "backend", "generate")
    policy = KvPolicy(RouterConfig(router_mode="kv", kv_cache_block_size=64))
    await runtime.serve_endpoint(address, idle, instance_id=21)  # before the feed starts
    feed = EndpointWorkers(runtime, address, policy, block_size_override=64)
    await feed.start()
    assert feed.workers() == [WorkerInfo(21, 64)]
    await feed.close()


def test_worker_events_reach_the_sender_policy() -> None:
    policy = KvPolicy(RouterConfig(router_mode="kv"))
    policy.add_worker(WorkerInfo(5, kv_block_size=16))
    prefix = worker_events_prefix("ns", "backend")
    assert prefix == "ns.backend."
    stored = RouterEvent(5, KvCacheEvent(0, KvStored(None, (StoredBlock(101, 202),))))
    load = LoadMetrics(worker_id=5, kv_active_blocks=3, kv_total_blocks=10)

    policies: dict[int, RoutingPolicy] = {5: policy}
    assert dispatch_worker_event(prefix + "kv-events", stored.to_wire(), policies.get)
    assert policy.stats().events_applied == 1
    assert dispatch_worker_event(prefix + "kv_metrics", load.to_wire(), policies.get)
    assert policy.load_metrics()[(5, 0)].kv_active_blocks == 3
    assert not dispatch_worker_event(prefix + "kv-events", stored.to_wire(), lambda _: None)
    assert not dispatch_worker_event(prefix + "kv-hit-rate", {"x": 1}, policies.get)
    with pytest.raises(KeyError):
        dispatch_worker_event(prefix + "kv-events", {"event": {}}, policies.get)


def test_kv_events_off_are_ignored_undecoded_and_metrics_still_apply() -> None:
    policy = KvPolicy(RouterConfig(router_mode="kv"))
    policy.add_worker(WorkerInfo(5, kv_block_size=16))
    load = LoadMetrics(worker_id=5, kv_active_blocks=4, kv_total_blocks=10)
    policies: dict[int, RoutingPolicy] = {5: policy}
    assert not dispatch_worker_event("ns.b.kv-events", {"event": {}}, policies.get, kv_events=False)
    assert dispatch_worker_event("ns.b.kv_metrics", load.to_wire(), policies.get, kv_events=False)
    assert policy.stats().events_applied == 0
    assert policy.load_metrics()[(5, 0)].kv_active_blocks == 4


def test_worker_events_prefix_of_a_namespace_or_of_everything() -> None:
    assert worker_events_prefix("ns") == "ns."
    assert worker_events_prefix(None) == ""
    assert worker_events_prefix("") == ""
