"""EndpointClient: instances leave routing when the request plane loses them and come back
when a reconnect succeeds while discovery still lists them; a discovery delete ends it."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _runtime_helpers import count

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.transport.tcp import TcpRequestServer


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll `predicate` (generous bound: this box may be loaded)."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[int]:
    return [item["i"] async for item in stream]


async def test_lost_instance_leaves_routing_and_returns_after_a_reconnect() -> None:
    config = RuntimeConfig(
        namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem", peer_reconnect_max_s=0.2
    )
    caller = await DistributedRuntime.create(config)
    address = EndpointAddress(config.namespace, "backend", "generate")
    name, key = f"{address.path}/7", f"v1/instances/{address.path}/7"
    port = free_port()

    async def serve() -> TcpRequestServer:
        server = TcpRequestServer(port=port)
        server.register(name, count)
        await server.start()
        return server

    server = await serve()
    await caller.discovery.put(key, {"transport": {"tcp": f"127.0.0.1:{port}"}})
    client = caller.client(address)
    changes: list[tuple[str, int]] = []
    try:
        await client.start()
        client.on_change(lambda kind, iid: changes.append((kind, iid)))
        assert client.instance_ids() == [7]
        await until(lambda: len(server._connections) == 1, "the caller's watch connection")

        await server.stop(0)  # the worker's listener and connections go; its key stays
        await until(lambda: changes == [("remove", 7)], "the instance to leave routing")
        assert client.instance_ids() == []
        assert not client.is_reachable(7)
        assert client.transport_address(7) == f"tcp://127.0.0.1:{port}"
        assert list(await caller.discovery.get_prefix(key)) == [key]

        server = await serve()
        await until(lambda: len(changes) == 2, "a reconnect probe to get through")
        assert changes == [("remove", 7), ("add", 7)]
        assert client.instance_ids() == [7]
        stream = client.generate({"n": 3}, instance_id=7, request_id="r")
        assert await collect(stream) == [0, 1, 2]

        await server.stop(0)
        await until(lambda: len(changes) == 3, "the instance to leave routing again")
        await caller.discovery.delete(key)  # discovery forgets it: no probe, no "add" later
        await until(lambda: client.transport_address(7) is None, "the delete")
        assert caller.request_client.peers is not None
        assert caller.request_client.peers.watched() == []
        server = await serve()
        await asyncio.sleep(0.5)  # a few probe periods: nothing comes back
        assert changes == [("remove", 7), ("add", 7), ("remove", 7)]
        assert client.instance_ids() == []
    finally:
        await server.stop(0)
        await caller.shutdown(0)


async def test_watching_off_keeps_unreachable_instances_listed() -> None:
    config = RuntimeConfig(
        namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem", peer_keepalive_s=0
    )
    caller = await DistributedRuntime.create(config)
    address = EndpointAddress(config.namespace, "backend", "generate")
    key = f"v1/instances/{address.path}/9"
    await caller.discovery.put(key, {"transport": {"tcp": f"127.0.0.1:{free_port()}"}})
    client = caller.client(address)
    try:
        await client.start()
        assert caller.request_client.peers is None
        await asyncio.sleep(0.3)
        assert client.instance_ids() == [9]  # only discovery removes it
    finally:
        await caller.shutdown(0)


async def test_negative_keepalive_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--peer-keepalive-s must be >= 0"):
        await DistributedRuntime.create(RuntimeConfig(discovery_backend="mem", peer_keepalive_s=-1))
