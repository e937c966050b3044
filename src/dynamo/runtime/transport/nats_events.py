"""NATS event plane (nats-py): publish to subject = topic; subscribe by topic prefix.

NATS has no string-prefix subscriptions, so a prefix subscribes to the wildcard of its
complete tokens (`a.b.kv` → `a.b.>`) and messages are filtered locally. Received messages
go to a bounded queue; when it is full the oldest is dropped (a gap in `seq`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from dynamo.runtime.errors import TransportError
from dynamo.runtime.transport.events import SequenceStamper, decode_payload

log = logging.getLogger(__name__)


async def connect_nats(url: str, *, connect_timeout_s: float = 2.0) -> NatsClient:
    """A connected nats-py client that reconnects forever and logs instead of printing."""

    async def on_error(exc: Exception) -> None:
        log.warning("NATS %s: %s", url, exc)

    # nats-py retries an unreachable server forever when reconnects are unlimited, so
    # probe it once first to fail fast with a clear error.
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "localhost", parts.port or 4222),
            connect_timeout_s,
        )
        writer.close()
        await writer.wait_closed()
    except (OSError, TimeoutError, ValueError) as exc:
        raise TransportError(f"cannot connect to NATS at {url}: {exc or 'timeout'}") from exc
    try:
        return await nats.connect(
            servers=[url],
            connect_timeout=connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise TransportError(f"cannot connect to NATS at {url}: {exc}") from exc


def subject_for_prefix(prefix: str) -> str:
    """The NATS subscription that covers every topic starting with `prefix`."""
    head, sep, _ = prefix.rpartition(".")
    return f"{head}.>" if sep and head else ">"


class NatsEventPublisher:
    """`EventPublisher` over a NATS connection."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._nc: NatsClient | None = None
        self._stamper = SequenceStamper()

    @property
    def address(self) -> str:
        return self._url

    async def start(self) -> str:
        if self._nc is None:
            self._nc = await connect_nats(self._url)
        return self._url

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self._nc is None:
            raise TransportError("NATS publisher is not started")
        try:
            await self._nc.publish(topic, self._stamper.encode(payload))
        except nats.errors.Error as exc:
            raise TransportError(f"NATS publish on {topic!r} failed: {exc}") from exc

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await nc.drain()


class NatsEventSubscriber:
    """`EventSubscriber` over a NATS connection (`connect`/`disconnect` are no-ops)."""

    def __init__(self, url: str, *, queue_size: int = 100_000) -> None:
        self._url = url
        self._nc: NatsClient | None = None
        self._prefixes: list[str] = []
        self._subjects: set[str] = set()
        self._pending: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(queue_size)
        self._dropped = 0

    async def start(self) -> None:
        if self._nc is None:
            self._nc = await connect_nats(self._url)
        await self.ready()

    async def ready(self) -> None:
        """Wait until every `subscribe` so far is registered with the server."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
        if self._nc is not None:
            await self._nc.flush()

    async def connect(self, address: str) -> None:
        return None

    async def disconnect(self, address: str) -> None:
        return None

    def subscribe(self, topic_prefix: str) -> None:
        if self._nc is None:
            raise TransportError("NATS subscriber is not started")
        self._prefixes.append(topic_prefix)
        subject = subject_for_prefix(topic_prefix)
        if subject not in self._subjects:
            self._subjects.add(subject)
            self._pending.append(asyncio.create_task(self._subscribe(subject)))

    async def _subscribe(self, subject: str) -> None:
        if self._nc is not None:
            await self._nc.subscribe(subject, cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        topic = msg.subject
        if not any(topic.startswith(p) for p in self._prefixes):
            return
        payload = decode_payload(msg.data, topic)
        if payload is None:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._dropped += 1
            if self._dropped % 1000 == 1:
                log.warning("NATS subscriber queue full: %d events dropped", self._dropped)
        self._queue.put_nowait((topic, payload))

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        for task in self._pending:
            task.cancel()
        self._pending = []
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await nc.close()
