"""NATS request plane, caller side: one connection, one wildcard inbox, many streams.

Each request gets its own reply subject under the client's inbox prefix. The client buffers
at most `stream_window_frames` unread frames per stream (the server never sends more than
it has been credited) and credits half a window back as the caller reads. NATS does not
report a dead peer, so a watchdog ticking once per keepalive interval ends a stream with
`StreamIncompleteError` once more than `MISSED_KEEPALIVES` ticks in a row passed without a
message from its server (data or keepalive). Counting ticks, not wall time, keeps a stalled
event loop from passing for a dead peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from dynamo.runtime.errors import StreamIncompleteError, TransportError
from dynamo.runtime.transport.framing import error_from_wire
from dynamo.runtime.transport.nats_events import connect_nats
from dynamo.runtime.transport.nats_wire import (
    CANCEL,
    CREDIT,
    DATA,
    ERROR,
    FINAL,
    KEEPALIVE,
    MISSED_KEEPALIVES,
    control_subject,
    decode,
    encode,
    subject_of_address,
)

log = logging.getLogger(__name__)
_NO_RESPONDERS = "503"


class _Stream:
    __slots__ = (
        "done",
        "error",
        "granted",
        "inbox",
        "items",
        "received",
        "silent_ticks",
        "subject",
        "uncredited",
        "waiter",
    )

    def __init__(self, subject: str, inbox: str, window: int) -> None:
        self.subject = subject
        self.inbox = inbox
        self.items: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.error: BaseException | None = None
        self.silent_ticks = 0  # watchdog ticks since the last message from the server
        self.granted = window  # DATA frames the server may send in all
        self.received = 0
        self.uncredited = 0  # frames read by the caller, not yet credited back

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class NatsRequestClient:
    """`RequestPlaneClient` over NATS; addresses are `nats:<subject>` (see `nats_wire`)."""

    def __init__(
        self, url: str, *, stream_window_frames: int = 64, keepalive_s: float = 1.0
    ) -> None:
        self.url = url
        self._window = max(2, stream_window_frames)
        self._credit_batch = self._window // 2
        self._keepalive_s = keepalive_s
        self._nc: NatsClient | None = None
        self._prefix = ""
        self._ids = itertools.count(1)
        self._streams: dict[str, _Stream] = {}  # reply inbox → stream
        self._lock = asyncio.Lock()
        self._watchdog_task: asyncio.Task[None] | None = None
        self._closed = False

    async def _connection(self) -> NatsClient:
        if self._nc is not None:
            return self._nc
        async with self._lock:
            if self._closed:
                raise TransportError("request-plane client is closed")
            if self._nc is None:
                nc = await connect_nats(self.url)
                prefix = nc.new_inbox()
                try:
                    await nc.subscribe(f"{prefix}.*", cb=self._on_reply)
                except nats.errors.Error as exc:
                    await nc.close()
                    raise TransportError(f"cannot subscribe on NATS at {self.url}: {exc}") from exc
                self._prefix, self._nc = prefix, nc
                self._watchdog_task = asyncio.create_task(self._watchdog(), name="nats watchdog")
            return self._nc

    async def stream(
        self, address: str, name: str, request: dict[str, Any], *, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        subject = subject_of_address(address)
        nc = await self._connection()
        message = [name, request_id, request, self._window, self._keepalive_s]
        data = encode(message, nc.max_payload, "request", request_at=2)
        inbox = f"{self._prefix}.{next(self._ids)}"
        loop = asyncio.get_running_loop()
        stream = self._streams[inbox] = _Stream(subject, inbox, self._window)
        try:
            try:
                await nc.publish(subject, data, reply=inbox)
            except nats.errors.Error as exc:
                raise TransportError(f"NATS publish to {subject!r} failed: {exc}") from exc
            items = stream.items
            while True:
                if items:
                    item = items.popleft()
                    stream.uncredited += 1
                    if stream.uncredited >= self._credit_batch:
                        stream.granted += stream.uncredited
                        await self._control(stream, [CREDIT, inbox, stream.uncredited])
                        stream.uncredited = 0
                    yield item
                elif stream.error is not None:
                    raise stream.error
                elif stream.done:
                    return
                else:
                    stream.waiter = loop.create_future()
                    await stream.waiter
        finally:
            if self._streams.pop(inbox, None) is not None:  # the caller stopped reading
                await self._control(stream, [CANCEL, inbox])

    async def _on_reply(self, msg: Msg) -> None:
        stream = self._streams.get(msg.subject)
        if stream is None:
            return  # a stream that ended or was cancelled
        stream.silent_ticks = 0
        headers = msg.headers
        if headers and headers.get("Status") == _NO_RESPONDERS:
            self._finish(
                stream,
                TransportError(
                    f"no responders on NATS subject {stream.subject!r}: nothing serves it "
                    "(the instance is gone or was never registered)"
                ),
            )
            return
        message = decode(msg.data)
        if message is None:
            await self._broken(stream, "sent an undecodable frame")
            return
        kind = message[0]
        if kind == DATA and len(message) == 2:
            stream.items.append(message[1])
            stream.received += 1
            if len(stream.items) > self._window:
                await self._broken(stream, "sent more frames than its flow-control window")
            else:
                stream.wake()
        elif kind == KEEPALIVE:
            pass
        elif kind == FINAL:
            stream.done = True
            self._finish(stream, None)
        elif kind == ERROR and len(message) == 3:
            self._finish(stream, error_from_wire(str(message[1]), str(message[2])))
        else:
            await self._broken(stream, "sent a malformed frame")

    async def _broken(self, stream: _Stream, what: str) -> None:
        log.error("request plane: %s %s; stream %s dropped", stream.subject, what, stream.inbox)
        self._finish(stream, TransportError(f"{stream.subject} {what}"))
        await self._control(stream, [CANCEL, stream.inbox])

    def _finish(self, stream: _Stream, error: BaseException | None) -> None:
        stream.error = error
        self._streams.pop(stream.inbox, None)
        stream.wake()

    async def _control(self, stream: _Stream, message: list[Any]) -> None:
        nc = self._nc
        if nc is None:
            return
        with contextlib.suppress(nats.errors.Error, TransportError):
            await nc.publish(control_subject(stream.subject), encode(message, 1 << 16, "control"))

    async def _watchdog(self) -> None:
        """End silent streams; tell servers waiting for credit that their caller is alive."""
        while True:
            await asyncio.sleep(self._keepalive_s)
            for stream in list(self._streams.values()):
                stream.silent_ticks += 1
                if stream.silent_ticks > MISSED_KEEPALIVES:
                    self._finish(
                        stream,
                        StreamIncompleteError(
                            f"no message from {stream.subject} for {stream.silent_ticks} "
                            f"keepalive intervals of {self._keepalive_s}s (server gone?) "
                            "before the final frame"
                        ),
                    )
                    await self._control(stream, [CANCEL, stream.inbox])
                elif stream.received >= stream.granted:
                    await self._control(stream, [CREDIT, stream.inbox, 0])

    async def close(self) -> None:
        self._closed = True
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
            self._watchdog_task = None
        for stream in list(self._streams.values()):
            await self._control(stream, [CANCEL, stream.inbox])
            self._finish(
                stream, StreamIncompleteError("request-plane client closed before the final frame")
            )
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.flush(timeout=2)
            await nc.close()
