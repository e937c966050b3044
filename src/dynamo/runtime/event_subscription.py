"""Event subscribers that find their publishers through discovery (ZMQ) or a broker (NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.discovery.base import EVENT_PUBLISHERS_ROOT, Discovery
from dynamo.runtime.errors import TransportError
from dynamo.runtime.transport.base import EventSubscriber

log = logging.getLogger(__name__)


class DiscoveredZmqSubscriber:
    """A ZMQ subscriber that connects to each publisher registered in the namespace."""

    def __init__(self, discovery: Discovery, namespace: str) -> None:
        from dynamo.runtime.transport.zmq_events import ZmqEventSubscriber

        self._sub = ZmqEventSubscriber()
        self._discovery = discovery
        self._prefix = f"{EVENT_PUBLISHERS_ROOT}/{namespace}/"
        self._by_key: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for key, value in (await self._discovery.get_prefix(self._prefix)).items():
            await self._add(key, value)
        self._task = asyncio.create_task(self._follow(), name="event publisher watch")

    async def _add(self, key: str, value: dict[str, Any] | None) -> None:
        address = (value or {}).get("address")
        if isinstance(address, str) and self._by_key.get(key) != address:
            try:
                await self._sub.connect(address)
                self._by_key[key] = address
            except TransportError as exc:
                log.warning("event publisher %s: %s", key, exc)

    async def _follow(self) -> None:
        async for event in self._discovery.watch_prefix(self._prefix):
            if event.kind == "put":
                await self._add(event.key, event.value)
            elif (address := self._by_key.pop(event.key, None)) is not None:
                await self._sub.disconnect(address)

    async def connect(self, address: str) -> None:
        await self._sub.connect(address)

    async def disconnect(self, address: str) -> None:
        await self._sub.disconnect(address)

    def subscribe(self, topic_prefix: str) -> None:
        self._sub.subscribe(topic_prefix)

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._sub.__aiter__()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._sub.close()


async def subscribe_events(
    config: RuntimeConfig, discovery: Discovery, topic_prefix: str
) -> EventSubscriber:
    """A started subscriber to `topic_prefix` on the configured event plane."""
    if config.event_plane == "zmq":
        zmq_sub = DiscoveredZmqSubscriber(discovery, config.namespace)
        zmq_sub.subscribe(topic_prefix)
        await zmq_sub.start()
        return zmq_sub
    from dynamo.runtime.transport.nats_events import NatsEventSubscriber

    nats_sub = NatsEventSubscriber(config.nats_server)
    await nats_sub.start()
    nats_sub.subscribe(topic_prefix)
    await nats_sub.ready()
    return nats_sub
