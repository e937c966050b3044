"""NATS request plane, server side: each served name subscribes its own subject.

See `nats_wire.py` for subjects and messages. A request becomes a task running the handler;
its frames go to the caller's reply inbox, paced by the caller's credits (flow control), with
keepalives while the handler is quiet. A CANCEL, or a caller that leaves the server out of
credit and does not answer `MISSED_KEEPALIVES` keepalives in a row (it died), stops the
`RequestContext` and ends the handler. Silence is counted in keepalives sent, not in wall
time, so a stalled event loop does not pass for a dead peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dynamo.runtime.errors import TransportError
from dynamo.runtime.tasks import wait_event
from dynamo.runtime.transport.base import RequestContext, RequestHandler
from dynamo.runtime.transport.framing import error_to_wire
from dynamo.runtime.transport.nats_events import connect_nats
from dynamo.runtime.transport.nats_wire import (
    CANCEL,
    CREDIT,
    DATA,
    ERROR,
    FINAL,
    KEEPALIVE,
    MISSED_KEEPALIVES,
    PayloadTooLargeError,
    control_subject,
    decode,
    encode,
    subject_for,
)

log = logging.getLogger(__name__)
_MIN_KEEPALIVE_S, _MAX_KEEPALIVE_S = 0.05, 60.0
_MAX_WINDOW_FRAMES = 1 << 20
_EARLY_CANCELS = 1024


class _CallerGone(Exception):
    """The caller stopped crediting frames and stopped answering."""


class _Stream:
    __slots__ = (
        "abandoned",
        "blocked",
        "credit",
        "ctx",
        "inbox",
        "keepalive_s",
        "last_sent",
        "task",
        "unanswered",
        "wakeup",
    )

    def __init__(
        self, inbox: str, ctx: RequestContext, window: int, keepalive_s: float, now: float
    ) -> None:
        self.inbox = inbox
        self.ctx = ctx
        self.credit = window
        self.keepalive_s = keepalive_s
        self.last_sent = now
        self.blocked = False  # out of credit, waiting for the caller
        self.unanswered = 0  # keepalives sent while blocked since the caller last spoke
        self.abandoned = False
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class NatsRequestServer:
    """`RequestPlaneServer` over NATS; `start()` returns the NATS server URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.address = ""
        self.draining = False
        self._nc: NatsClient | None = None
        self._handlers: dict[str, RequestHandler] = {}
        self._subs: dict[str, Subscription] = {}  # name → request subscription
        self._control_subs: dict[str, Subscription] = {}  # name → control subscription
        self._pending: list[asyncio.Task[None]] = []  # (un)subscriptions `ready` awaits
        self._replies: set[asyncio.Task[None]] = set()  # error replies to refused requests
        self._streams: dict[str, _Stream] = {}  # reply inbox → stream
        # Requests and cancels arrive on different subscriptions, so a cancel can overtake
        # its request; remember the latest unmatched cancels to refuse those requests.
        self._early_cancels: dict[str, None] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._has_streams = asyncio.Event()
        self._keepalive_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ registration
    def register(self, name: str, handler: RequestHandler) -> None:
        subject_for(name)  # a bad name fails here, not in a background task
        self._handlers[name] = handler
        if self._nc is not None:
            self._pending.append(asyncio.create_task(self._subscribe(name)))

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)
        sub = self._subs.pop(name, None)
        if sub is not None:  # the control subscription stays: in-flight streams need it
            self._pending.append(asyncio.create_task(_unsubscribe(sub)))

    def handler_names(self) -> list[str]:
        return list(self._handlers)

    def subject(self, name: str) -> str:
        return subject_for(name)

    async def ready(self) -> None:
        """Wait until every (un)registration so far is in effect on the NATS server."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
        if self._nc is not None:
            try:
                await self._nc.flush()
            except (nats.errors.Error, TimeoutError) as exc:
                raise TransportError(f"NATS at {self.url} did not confirm: {exc}") from exc

    async def _subscribe(self, name: str) -> None:
        nc = self._nc
        if nc is None or name not in self._handlers or name in self._subs:
            return
        subject = subject_for(name)

        async def on_request(msg: Msg) -> None:
            self._on_request(name, msg)

        try:
            if name not in self._control_subs:
                self._control_subs[name] = await nc.subscribe(
                    control_subject(subject), cb=self._on_control
                )
            self._subs[name] = await nc.subscribe(subject, cb=on_request)
        except nats.errors.Error as exc:
            raise TransportError(f"cannot subscribe {subject!r} on {self.url}: {exc}") from exc

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> str:
        if self._nc is None:
            self._nc = await connect_nats(self.url)
            self.address = self.url
            self._keepalive_task = asyncio.create_task(self._keepalives(), name="nats keepalives")
            self._pending.extend(asyncio.create_task(self._subscribe(n)) for n in self._handlers)
        await self.ready()
        return self.address

    def inflight(self) -> int:
        return len(self._streams)

    async def stop(self, grace_s: float) -> None:
        """Unsubscribe (new requests find no responder), drain for `grace_s`, close."""
        self.draining = True
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            await _unsubscribe(sub)
        if self._streams:
            await wait_event(self._idle, grace_s)
        leftover = list(self._streams.values())
        if leftover:
            log.warning("request plane: cancelling %d requests still running", len(leftover))
            for stream in leftover:
                stream.ctx.stop()
                if stream.task is not None:
                    stream.task.cancel()
            await asyncio.gather(*(s.task for s in leftover if s.task), return_exceptions=True)
            for stream in leftover:  # callers migrate these at once instead of timing out
                await self._send_error(stream, "stream_incomplete", "the server shut down")
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task
            self._keepalive_task = None
        await asyncio.gather(*self._replies, return_exceptions=True)
        pending, self._pending = self._pending, []
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.flush(timeout=2)
            await nc.close()

    # ------------------------------------------------------------------ requests
    def _on_request(self, name: str, msg: Msg) -> None:
        inbox = msg.reply
        request = decode(msg.data)
        if not inbox:
            log.warning("request plane: request on %s without a reply inbox dropped", msg.subject)
            return
        if (
            request is None
            or len(request) != 5
            or type(request[0]) is not str
            or type(request[1]) is not str
            or type(request[3]) is not int
            or type(request[4]) not in (int, float)
            or not 0 < request[3] <= _MAX_WINDOW_FRAMES
            or not _MIN_KEEPALIVE_S <= request[4] <= _MAX_KEEPALIVE_S
        ):
            log.error("request plane: malformed request on %s", msg.subject)
            self._reply_error(inbox, "invalid_request", f"malformed request on {msg.subject}")
            return
        req_name, request_id, body, window, keepalive_s = request
        if inbox in self._streams:
            self._reply_error(inbox, "invalid_request", f"reply inbox {inbox} is already in use")
            return
        if inbox in self._early_cancels:
            del self._early_cancels[inbox]
            return  # the caller gave up before the request got here
        if self.draining:
            self._reply_error(inbox, "unavailable", "server is shutting down")
            return
        handler = self._handlers.get(name)
        if handler is None or req_name != name:
            self._reply_error(inbox, "not_found", f"no endpoint {req_name!r} on {msg.subject}")
            return
        loop = asyncio.get_running_loop()
        stream = _Stream(inbox, RequestContext(request_id), window, float(keepalive_s), loop.time())
        self._streams[inbox] = stream
        self._idle.clear()
        self._has_streams.set()
        stream.task = asyncio.create_task(self._run(stream, handler, body))

    def _on_control_message(self, message: list[Any] | None) -> None:
        if message is None or len(message) < 2:
            return
        stream = self._streams.get(message[1]) if type(message[1]) is str else None
        if stream is None:
            if message[0] == CANCEL and type(message[1]) is str:
                self._early_cancels[message[1]] = None
                if len(self._early_cancels) > _EARLY_CANCELS:
                    del self._early_cancels[next(iter(self._early_cancels))]
            return
        if message[0] == CANCEL:
            stream.ctx.stop()
            if stream.task is not None:
                stream.task.cancel()
        elif message[0] == CREDIT and len(message) == 3 and type(message[2]) is int:
            stream.credit += message[2]
            stream.unanswered = 0
            stream.wakeup.set()

    async def _on_control(self, msg: Msg) -> None:
        self._on_control_message(decode(msg.data))

    async def _run(self, stream: _Stream, handler: RequestHandler, body: Any) -> None:
        produced: AsyncIterator[dict[str, Any]] | None = None
        try:
            produced = handler(body, stream.ctx)
            async for item in produced:
                if stream.credit <= 0:
                    await self._wait_for_credit(stream)
                stream.credit -= 1
                await self._send(stream, [DATA, item], "response frame")
            await self._send(stream, [FINAL], "final frame")
        except asyncio.CancelledError:
            stream.ctx.stop()
            raise
        except _CallerGone:
            stream.ctx.stop()
            log.warning("request %s: caller stopped answering; stream abandoned", stream.inbox)
            await self._send_error(stream, "stream_incomplete", "the caller stopped answering")
        except PayloadTooLargeError as exc:  # not retryable, unlike other transport errors
            await self._send_error(stream, "payload_too_large", str(exc))
        except Exception as exc:
            kind, message = error_to_wire(exc)
            if kind == "internal":
                log.exception("handler of request %s failed", stream.ctx.request_id)
            await self._send_error(stream, kind, message)
        finally:
            self._streams.pop(stream.inbox, None)
            if not self._streams:
                self._idle.set()
                self._has_streams.clear()
            aclose = getattr(produced, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _wait_for_credit(self, stream: _Stream) -> None:
        stream.blocked, stream.unanswered = True, 0
        try:
            while stream.credit <= 0:
                if stream.abandoned:
                    raise _CallerGone
                stream.wakeup.clear()
                await stream.wakeup.wait()
        finally:
            stream.blocked = False

    async def _send(self, stream: _Stream, message: list[Any], what: str) -> None:
        nc = self._nc
        if nc is None:
            raise TransportError("the request-plane server is stopped")
        data = encode(message, nc.max_payload, what)
        stream.last_sent = asyncio.get_running_loop().time()
        try:
            await nc.publish(stream.inbox, data)
        except nats.errors.Error as exc:
            raise TransportError(f"NATS publish to {stream.inbox} failed: {exc}") from exc

    async def _send_error(self, stream: _Stream, kind: str, message: str) -> None:
        with contextlib.suppress(TransportError):
            await self._send(stream, [ERROR, kind, message], "error frame")

    def _reply_error(self, inbox: str, kind: str, message: str) -> None:
        nc = self._nc
        if nc is not None:
            data = encode([ERROR, kind, message], nc.max_payload, "error frame")
            task = asyncio.create_task(_publish_quietly(nc, inbox, data))
            self._replies.add(task)
            task.add_done_callback(self._replies.discard)

    async def _keepalives(self) -> None:
        """Send KEEPALIVE on every stream quiet for its keepalive interval."""
        loop = asyncio.get_running_loop()
        while True:
            await self._has_streams.wait()
            interval = min((s.keepalive_s for s in self._streams.values()), default=1.0)
            await asyncio.sleep(interval / 2)
            now = loop.time()
            for stream in list(self._streams.values()):
                if stream.inbox in self._streams and now - stream.last_sent >= stream.keepalive_s:
                    if stream.blocked:
                        stream.unanswered += 1
                        if stream.unanswered > MISSED_KEEPALIVES:
                            stream.abandoned = True
                            stream.wakeup.set()
                            continue
                    with contextlib.suppress(TransportError):
                        await self._send(stream, [KEEPALIVE], "keepalive")


async def _unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(nats.errors.Error):
        await sub.unsubscribe()


async def _publish_quietly(nc: NatsClient, subject: str, data: bytes) -> None:
    with contextlib.suppress(nats.errors.Error):
        await nc.publish(subject, data)
