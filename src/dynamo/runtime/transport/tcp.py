"""TCP request plane: one asyncio server per process, a pooled multiplexing client.

See `framing.py` for the wire format. Flow control: the server awaits the socket's drain
before producing more of a stream; the client keeps at most `stream_queue_frames` unread
frames per stream and pauses reading the connection while any stream is over that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime.errors import (
    StreamIncompleteError,
    TransportError,
)
from dynamo.runtime.tasks import wait_event
from dynamo.runtime.transport.base import RequestContext, RequestHandler
from dynamo.runtime.transport.framing import (
    CANCEL,
    DATA,
    ERROR,
    FINAL,
    GOAWAY,
    MAX_FRAME_BYTES,
    REQUEST,
    FramedProtocol,
    error_from_wire,
    error_to_wire,
)

log = logging.getLogger(__name__)
_YIELD_EVERY = 64


def parse_address(address: str) -> tuple[str, int]:
    """`tcp://host:port` or `host:port` → (host, port)."""
    body = address.removeprefix("tcp://")
    host, sep, port = body.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TransportError(f"bad request-plane address {address!r}: expected tcp://host:port")
    return host.strip("[]"), int(port)


# ----------------------------------------------------------------------------------- server
class _ServerConnection(FramedProtocol):
    def __init__(self, server: TcpRequestServer) -> None:
        super().__init__(server.max_frame_bytes)
        self._server = server
        self._tasks: dict[int, tuple[asyncio.Task[None], RequestContext]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)

    def on_message(self, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == REQUEST and len(msg) == 5:
            _, sid, name, request_id, body = msg
            if type(sid) is not int or type(name) is not str or type(request_id) is not str:
                self.protocol_error("REQUEST with bad field types")
            elif sid in self._tasks:
                self.protocol_error(f"stream id {sid} reused while open")
            else:
                self._start(sid, name, request_id, body)
        elif kind == CANCEL and len(msg) == 2:
            entry = self._tasks.pop(msg[1], None)
            if entry is not None:
                entry[1].stop()
                entry[0].cancel()
        else:
            self.protocol_error(f"unexpected message type {kind!r} (length {len(msg)})")

    def _start(self, sid: int, name: str, request_id: str, body: Any) -> None:
        server = self._server
        if server.draining:
            self.send([ERROR, sid, "unavailable", "server is shutting down"])
            return
        handler = server._handlers.get(name)
        if handler is None:
            self.send([ERROR, sid, "not_found", f"no endpoint {name!r} at {server.address}"])
            return
        ctx = RequestContext(request_id)
        task = asyncio.create_task(self._run(sid, handler, body, ctx))
        self._tasks[sid] = (task, ctx)
        server._track(task)

    async def _run(self, sid: int, handler: RequestHandler, body: Any, ctx: RequestContext) -> None:
        stream: AsyncIterator[dict[str, Any]] | None = None
        try:
            stream = handler(body, ctx)
            sent = 0
            async for item in stream:
                self.send([DATA, sid, item])
                sent += 1
                if self._write_paused:
                    await self.drain()
                elif sent % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a handler that never awaits must not starve the loop
                if self.closed:
                    return
            self.send([FINAL, sid])
        except asyncio.CancelledError:
            ctx.stop()
            raise
        except Exception as exc:
            kind, message = error_to_wire(exc)
            if kind == "internal":
                log.exception("handler of stream %s (request %s) failed", sid, ctx.request_id)
            if not self.closed:
                self.send([ERROR, sid, kind, message])
        finally:
            self._tasks.pop(sid, None)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server._connections.discard(self)
        tasks, self._tasks = self._tasks, {}
        for task, ctx in tasks.values():
            ctx.stop()
            task.cancel()


class TcpRequestServer:
    """`RequestPlaneServer` over TCP: named handlers, each request a task, graceful stop."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        self.host, self.port, self.max_frame_bytes = host, port, max_frame_bytes
        self.address = ""
        self.draining = False
        self._handlers: dict[str, RequestHandler] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._inflight: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def register(self, name: str, handler: RequestHandler) -> None:
        self._handlers[name] = handler

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)

    def handler_names(self) -> list[str]:
        return list(self._handlers)

    async def start(self) -> str:
        if self._server is not None:
            return self.address
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _ServerConnection(self), self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        port = self._server.sockets[0].getsockname()[1]
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostbyname(socket.gethostname())
        self.address = f"tcp://{host}:{port}"
        return self.address

    def inflight(self) -> int:
        return len(self._inflight)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._inflight.add(task)
        self._idle.clear()
        task.add_done_callback(self._untrack)

    def _untrack(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not self._inflight:
            self._idle.set()

    async def stop(self, grace_s: float) -> None:
        """Stop listening, refuse new requests, let in-flight ones finish for `grace_s`."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if not conn._tasks:  # only idle ones: a caller's open streams must not be disturbed
                conn.send([GOAWAY])
        if self._inflight:
            await wait_event(self._idle, grace_s)
        leftover = list(self._inflight)
        if leftover:
            log.warning("request plane: cancelling %d requests still running", len(leftover))
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


# ----------------------------------------------------------------------------------- client
class _Stream:
    __slots__ = ("done", "error", "items", "paused", "sid", "waiter")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.items: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.error: BaseException | None = None
        self.paused = False

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _ClientConnection(FramedProtocol):
    def __init__(self, address: str, max_frame_bytes: int, high: int) -> None:
        super().__init__(max_frame_bytes)
        self.address = address
        self.streams: dict[int, _Stream] = {}
        self._sids = itertools.count(1)
        self._high, self._low = high, max(1, high // 4)
        self._paused_streams = 0
        self._close_reason: str | None = None

    def open(self, name: str, request_id: str, request: dict[str, Any]) -> _Stream:
        sid = next(self._sids)
        self.send_request(sid, name, request_id, request)
        # Out now rather than at the end of this loop iteration (`send` coalesces): on a busy
        # loop that wait is the rest of the iteration, and every request's TTFT would pay it.
        self._flush()
        stream = self.streams[sid] = _Stream(sid)
        return stream

    def on_message(self, msg: list[Any]) -> None:
        kind = msg[0]
        stream = self.streams.get(msg[1]) if len(msg) > 1 else None
        if kind == DATA and len(msg) == 3:
            if stream is not None:  # else: a stream we cancelled
                stream.items.append(msg[2])
                stream.wake()
                if len(stream.items) >= self._high and not stream.paused:
                    stream.paused = True
                    self._paused_streams += 1
                    if self._paused_streams == 1 and self.transport is not None:
                        self.transport.pause_reading()
        elif kind == FINAL and len(msg) == 2:
            if stream is not None:
                stream.done = True
                self._forget(stream)
                stream.wake()
        elif kind == ERROR and len(msg) == 4:
            if stream is not None:
                stream.error = error_from_wire(str(msg[2]), str(msg[3]))
                self._forget(stream)
                stream.wake()
        elif kind == GOAWAY and len(msg) == 1:
            pass  # the server is stopping; it refuses new streams itself
        else:
            self.protocol_error(f"unexpected message type {kind!r} (length {len(msg)})")

    @property
    def paused_streams(self) -> int:
        return self._paused_streams

    def consumed(self, stream: _Stream) -> None:
        if stream.paused and len(stream.items) <= self._low:
            self._unpause(stream)

    def _unpause(self, stream: _Stream) -> None:
        if stream.paused:
            stream.paused = False
            self._paused_streams -= 1
            if self._paused_streams == 0 and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def _forget(self, stream: _Stream) -> None:
        self.streams.pop(stream.sid, None)

    def cancel(self, stream: _Stream) -> None:
        """The caller dropped an open stream: tell the server, stop counting its queue."""
        if self.streams.pop(stream.sid, None) is not None:
            with contextlib.suppress(TransportError):
                self.send([CANCEL, stream.sid])
        self.release(stream)

    def release(self, stream: _Stream) -> None:
        """The caller is done with `stream`: its unread frames no longer pause the connection.

        A stream that pushed its queue over the bound pauses reading of the whole connection
        until its reader drains it; one whose FINAL or ERROR frame came in the same read and
        which is then dropped unread would otherwise hold every other stream on the connection.
        """
        stream.items.clear()
        self._unpause(stream)

    def protocol_error(self, reason: str) -> None:
        self._close_reason = f"malformed frame from {self.address}: {reason}"
        super().protocol_error(reason)

    def shut(self, reason: str) -> None:
        self._close_reason = reason
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        reason = self._close_reason or f"connection to {self.address} lost"
        if exc is not None:
            reason += f" ({exc})"
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.error = StreamIncompleteError(f"{reason} before the final frame")
            stream.wake()


class TcpRequestClient:
    """`RequestPlaneClient` over TCP with up to `pool_size` connections per address."""

    def __init__(
        self,
        *,
        pool_size: int = 2,
        connect_timeout_s: float = 3.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        stream_queue_frames: int = 64,
    ) -> None:
        self._pool_size = max(1, pool_size)
        self._connect_timeout_s = connect_timeout_s
        self._max_frame_bytes = max_frame_bytes
        self._high = max(2, stream_queue_frames)
        self._pools: dict[str, list[_ClientConnection]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def _connection(self, address: str) -> _ClientConnection:
        pool = self._pools.get(address)
        if pool:
            live = [c for c in pool if not c.closed]
            if len(live) >= self._pool_size:
                return min(live, key=lambda c: len(c.streams))
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            pool = self._pools.setdefault(address, [])
            pool[:] = [c for c in pool if not c.closed]
            idle = [c for c in pool if not c.streams]
            if idle or len(pool) >= self._pool_size:
                return (idle or sorted(pool, key=lambda c: len(c.streams)))[0]
            conn = await self._connect(address)
            pool.append(conn)
            return conn

    async def _connect(self, address: str) -> _ClientConnection:
        if self._closed:
            raise TransportError("request-plane client is closed")
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        try:  # asyncio.timeout: 3.11's wait_for can lose a cancellation as the connect ends
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _ClientConnection(address, self._max_frame_bytes, self._high),
                    host,
                    port,
                )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {address}: {exc or 'timeout'}") from exc
        return conn

    async def stream(
        self, address: str, name: str, request: dict[str, Any], *, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        conn = await self._connection(address)
        stream = conn.open(name, request_id, request)
        try:
            if conn.write_paused:
                await conn.drain()
            items = stream.items
            while True:
                if items:
                    item = items.popleft()
                    if stream.paused:
                        conn.consumed(stream)
                    yield item
                elif stream.error is not None:
                    raise stream.error
                elif stream.done:
                    return
                else:
                    stream.waiter = conn.loop.create_future()
                    await stream.waiter
        finally:
            if not stream.done and stream.error is None:
                conn.cancel(stream)
            else:  # ended but dropped unread: its queue must not keep the connection paused
                conn.release(stream)

    def describe(self) -> list[str]:
        """A line per pooled connection: its open streams, and whether reading it is paused
        (some stream's queue is over its bound) or writing to it waits on the server."""
        lines = []
        for address, pool in self._pools.items():
            for conn in pool:
                state = "closed" if conn.closed else "open"
                if conn.paused_streams:
                    state += f", reading paused by {conn.paused_streams} streams"
                if conn.write_paused:
                    state += ", writes waiting"
                lines.append(f"{address}: {len(conn.streams)} streams, {state}")
        return lines

    def drop(self, address: str, reason: str) -> None:
        """Close every connection to `address`: its open streams end incomplete (and migrate)."""
        for conn in list(self._pools.get(address, ())):
            conn.shut(reason)

    async def close(self) -> None:
        self._closed = True
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for conn in pool:
                conn.shut("request-plane client closed")
