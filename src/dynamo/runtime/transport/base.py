"""Interfaces of the request plane and the event plane.

Request plane: a caller sends one request (a msgpack-able dict) to a named handler on a peer
and reads a stream of response dicts. The stream ends with an explicit final frame; if the
connection breaks before it, the caller gets `StreamIncompleteError`. If the caller stops
reading (closes the iterator / is cancelled) the handler's `RequestContext` is stopped and
the handler's generator is cancelled on the server.

Event plane: publishers send (topic, payload) pairs; subscribers receive those whose topic
starts with a subscribed prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol


class RequestContext:
    """Per-request state a handler sees: its id and whether the caller has gone."""

    __slots__ = ("_stopped", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    def is_stopped(self) -> bool:
        return self._stopped.is_set()

    async def stopped(self) -> None:
        await self._stopped.wait()


RequestHandler = Callable[[dict[str, Any], RequestContext], AsyncIterator[dict[str, Any]]]


class RequestPlaneServer(Protocol):
    def register(self, name: str, handler: RequestHandler) -> None:
        """Serve `handler` under `name` (the runtime uses `ns/comp/ep/{instance_id:x}`)."""

    def unregister(self, name: str) -> None:
        """Stop accepting new requests for `name`; in-flight ones continue."""

    async def start(self) -> str:
        """Start listening; return the address peers dial (e.g. `tcp://127.0.0.1:4242`)."""

    def inflight(self) -> int:
        """Requests being handled now."""

    async def stop(self, grace_s: float) -> None:
        """Refuse new requests, wait up to `grace_s` for in-flight ones, then close."""


class RequestPlaneClient(Protocol):
    def stream(
        self, address: str, name: str, request: dict[str, Any], *, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Send `request` to handler `name` at `address`; yield its response dicts.

        Raises TransportError (cannot connect), NotFoundError (no such handler),
        RemoteError (handler raised), StreamIncompleteError (broke before the final frame).
        """

    async def close(self) -> None: ...


class EventPublisher(Protocol):
    @property
    def address(self) -> str:
        """Where subscribers connect (ZMQ) or the server URL (NATS)."""

    async def publish(self, topic: str, payload: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class EventSubscriber(Protocol):
    async def connect(self, address: str) -> None:
        """Start receiving from a publisher at `address` (no-op for brokered planes)."""

    async def disconnect(self, address: str) -> None: ...

    def subscribe(self, topic_prefix: str) -> None: ...

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...

    async def close(self) -> None: ...
