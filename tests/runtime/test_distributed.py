"""DistributedRuntime: serve, discover, call, model cards, events, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _runtime_helpers import Spawn

from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.distributed import DistributedRuntime, event_topic
from dynamo.runtime.errors import ConfigError, NotFoundError, UnavailableError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.servers import NatsServer


async def echo(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    for token in request["tokens"]:
        yield {"token": token, "rid": ctx.request_id}


def mem_config(**kw: Any) -> RuntimeConfig:
    return RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem", **kw)


@pytest.fixture
async def runtimes() -> AsyncIterator[tuple[DistributedRuntime, DistributedRuntime]]:
    config = mem_config()
    worker = await DistributedRuntime.create(config)
    caller = await DistributedRuntime.create(config)
    yield worker, caller
    await worker.shutdown(0)
    await caller.shutdown(0)


async def test_serve_discover_generate_and_unregister(
    runtimes: tuple[DistributedRuntime, DistributedRuntime],
) -> None:
    worker, caller = runtimes
    address = EndpointAddress(worker.config.namespace, "backend", "generate")
    served = await worker.serve_endpoint(address, echo)
    assert served.instance_id == worker.instance_id
    info = await worker.discovery.get_prefix(f"v1/instances/{address.path}/")
    assert info == {
        f"v1/instances/{address.path}/{served.instance_id:x}": {
            "namespace": address.namespace,
            "component": "backend",
            "endpoint": "generate",
            "instance_id": served.instance_id,
            "transport": {"tcp": worker.server_address.removeprefix("tcp://")},  # type: ignore[union-attr]
        }
    }
    client = caller.client(address)
    changes: list[tuple[str, int]] = []
    removed = asyncio.Event()

    def on_change(change: str, iid: int) -> None:
        changes.append((change, iid))
        if change == "remove":
            removed.set()

    client.on_change(on_change)
    assert await client.wait_for_instances(5) == [served.instance_id]
    items = [
        item
        async for item in client.generate(
            {"tokens": [7, 8]}, instance_id=served.instance_id, request_id="r"
        )
    ]
    assert items == [{"token": 7, "rid": "r"}, {"token": 8, "rid": "r"}]
    with pytest.raises(NotFoundError, match="instance 1 of"):
        client.generate({"tokens": []}, instance_id=1, request_id="x")
    await served.unregister()
    await asyncio.wait_for(removed.wait(), 5)
    assert client.instance_ids() == []
    assert changes == [("add", served.instance_id), ("remove", served.instance_id)]
    await client.close()


async def test_second_instance_in_one_process_and_model_cards(
    runtimes: tuple[DistributedRuntime, DistributedRuntime],
) -> None:
    worker, caller = runtimes
    address = EndpointAddress(worker.config.namespace, "backend", "generate")
    watch = caller.watch_model_cards(worker.config.namespace)
    card = ModelCard(name="tiny", context_length=128, kv_block_size=4, total_kv_blocks=10)
    first = await worker.serve_endpoint(address, echo, model_card=card)
    second = await worker.serve_endpoint(address, echo, model_card=card, instance_id=0xABC)
    events = [await asyncio.wait_for(anext(watch), 5) for _ in range(2)]
    assert {e.key for e in events} == {
        f"v1/mdc/{address.path}/{first.instance_id:x}",
        f"v1/mdc/{address.path}/abc",
    }
    assert all(e.value == card.model_dump(mode="json") for e in events)
    with pytest.raises(ConfigError, match="already served"):
        await worker.serve_endpoint(address, echo, instance_id=0xABC)
    client = caller.client(address)
    await client.start()
    assert client.instance_ids() == sorted([first.instance_id, 0xABC])
    await second.unregister()
    assert await asyncio.wait_for(anext(watch), 5) == WatchEvent(
        "delete", f"v1/mdc/{address.path}/abc", None
    )
    await watch.aclose()


async def test_wait_for_instances_times_out_clearly(
    runtimes: tuple[DistributedRuntime, DistributedRuntime],
) -> None:
    _, caller = runtimes
    client = caller.client(EndpointAddress(caller.config.namespace, "nobody", "generate"))
    with pytest.raises(UnavailableError, match=r"no instance of dyn://ns\w+\.nobody\.generate"):
        await client.wait_for_instances(0.2)


async def test_shutdown_is_idempotent_and_final(
    runtimes: tuple[DistributedRuntime, DistributedRuntime],
) -> None:
    worker, caller = runtimes
    address = EndpointAddress(worker.config.namespace, "backend", "generate")
    await worker.serve_endpoint(address, echo)
    await asyncio.gather(worker.shutdown(0), worker.shutdown(0))
    await worker.shutdown(0)
    assert await caller.discovery.get_prefix("v1/instances/") == {}
    with pytest.raises(UnavailableError, match="shutting down"):
        await worker.serve_endpoint(address, echo)


async def test_create_refuses_unknown_planes() -> None:
    with pytest.raises(ConfigError, match="unknown request plane 'http'"):
        await DistributedRuntime.create(dataclasses.replace(mem_config(), request_plane="http"))
    with pytest.raises(ConfigError, match="unknown discovery backend 'zk'"):
        await DistributedRuntime.create(dataclasses.replace(mem_config(), discovery_backend="zk"))


async def collect_events(sub: Any, publish: Any, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def pump() -> None:
        async for _, payload in sub:
            got.append(payload)
            if len(got) > count:
                return

    reader = asyncio.create_task(pump())
    while not got:  # pub/sub drops until the subscription is live
        await publish()
        await asyncio.sleep(0.02)
    for _ in range(count):
        await publish()
    await asyncio.wait_for(reader, 20)
    return got


async def test_zmq_subscriber_finds_publishers_through_discovery(
    runtimes: tuple[DistributedRuntime, DistributedRuntime],
) -> None:
    worker, caller = runtimes
    topic = event_topic(worker.config.namespace, "backend", "kv_events")
    pub = await worker.event_publisher()
    assert await worker.event_publisher() is pub
    registered = await caller.discovery.get_prefix(f"v1/events/{worker.config.namespace}/")
    assert registered == {
        f"v1/events/{worker.config.namespace}/{worker.instance_id:x}": {"address": pub.address}
    }
    sub = await caller.event_subscriber(event_topic(worker.config.namespace, "backend", ""))
    got = await collect_events(sub, lambda: pub.publish(topic, {"blocks": [1]}), 20)
    seqs = [p["seq"] for p in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert all(p["blocks"] == [1] for p in got)


async def test_nats_event_plane_through_runtime(nats_server: NatsServer) -> None:
    config = mem_config(event_plane="nats", nats_server=nats_server.url)
    worker = await DistributedRuntime.create(config)
    caller = await DistributedRuntime.create(config)
    pub = await worker.event_publisher()
    sub = await caller.event_subscriber(f"{config.namespace}.backend.")
    got = await collect_events(
        sub, lambda: pub.publish(f"{config.namespace}.backend.load", {"active": 1}), 20
    )
    seqs = [p["seq"] for p in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    await worker.shutdown(0)
    await caller.shutdown(0)


async def test_two_processes_over_file_discovery(tmp_path: Path, spawn: Spawn) -> None:
    namespace = f"ns{uuid.uuid4().hex[:8]}"
    env = {"DYN_NAMESPACE": namespace, "DYN_FILE_KV": str(tmp_path)}
    child = await spawn("serve-runtime", env=env)
    instance_id = int(child.ready[0], 16)
    caller = await DistributedRuntime.create(
        RuntimeConfig(namespace=namespace, file_kv_root=str(tmp_path))
    )
    client = caller.client(EndpointAddress(namespace, "worker", "generate"))
    assert await client.wait_for_instances(10) == [instance_id]
    items = [i async for i in client.generate({"n": 3}, instance_id=instance_id, request_id="a")]
    assert [i["i"] for i in items] == [0, 1, 2]
    assert {i["pid"] for i in items} == {child.proc.pid}
    await caller.shutdown(0)
