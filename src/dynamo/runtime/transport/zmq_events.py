"""ZMQ event plane: each process binds one PUB socket; subscribers connect to every publisher.

Messages are two frames, [topic, msgpack payload]; ZMQ filters by topic prefix on the
publisher side. Publishers never block: a subscriber that falls behind its high-water mark
loses messages (visible as a gap in `seq`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from dynamo.runtime.errors import TransportError
from dynamo.runtime.transport.events import SequenceStamper, decode_payload

log = logging.getLogger(__name__)
_HWM = 100_000


class ZmqEventPublisher:
    """`EventPublisher` on a PUB socket bound to a random port of `host`."""

    def __init__(self, host: str = "127.0.0.1", context: zmq.asyncio.Context | None = None) -> None:
        self._host = host
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._address = ""
        self._stamper = SequenceStamper()

    @property
    def address(self) -> str:
        return self._address

    async def start(self) -> str:
        if self._sock is None:
            sock = self._ctx.socket(zmq.PUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, _HWM)
            try:
                port = sock.bind_to_random_port(f"tcp://{self._host}")
            except zmq.ZMQError as exc:
                sock.close()
                raise TransportError(f"cannot bind ZMQ publisher on {self._host}: {exc}") from exc
            self._sock, self._address = sock, f"tcp://{self._host}:{port}"
        return self._address

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self._sock is None:
            raise TransportError("ZMQ publisher is not started")
        await self._sock.send_multipart([topic.encode(), self._stamper.encode(payload)])

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None


class ZmqEventSubscriber:
    """`EventSubscriber` on one SUB socket connected to any number of publishers."""

    def __init__(self, context: zmq.asyncio.Context | None = None) -> None:
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, _HWM)
        self._connected: set[str] = set()
        self._closed = False

    @property
    def publishers(self) -> set[str]:
        return set(self._connected)

    async def connect(self, address: str) -> None:
        if address not in self._connected:
            try:
                self._sock.connect(address)
            except zmq.ZMQError as exc:
                raise TransportError(f"cannot connect ZMQ subscriber to {address}: {exc}") from exc
            self._connected.add(address)

    async def disconnect(self, address: str) -> None:
        if address in self._connected:
            self._connected.discard(address)
            try:
                self._sock.disconnect(address)
            except zmq.ZMQError as exc:
                log.debug("ZMQ disconnect from %s: %s", address, exc)

    def subscribe(self, topic_prefix: str) -> None:
        self._sock.setsockopt(zmq.SUBSCRIBE, topic_prefix.encode())

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while not self._closed:
            try:
                frames = await self._sock.recv_multipart()
            except zmq.ZMQError as exc:
                if self._closed:
                    return
                raise TransportError(f"ZMQ subscriber failed: {exc}") from exc
            if len(frames) != 2:
                log.warning("event plane: dropped a message of %d frames", len(frames))
                continue
            topic = frames[0].decode(errors="replace")
            payload = decode_payload(frames[1], topic)
            if payload is not None:
                yield topic, payload

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close(linger=0)
