"""Write an SSE body with as few socket writes as the stream allows.

A stream's first chunk in an event-loop iteration leaves at once; chunks it produces later in
the same iteration (a worker's outputs that arrived together) are joined and sent as one HTTP
chunk at the end of the iteration, instead of one send per token. Sending the first at once
rather than at the end of the iteration keeps a token from waiting for every other stream's
work in that iteration. The first chunk of the body goes through aiohttp (it carries the
headers), the last one with the end of the body; backpressure uses aiohttp's drain, bounded
by `write_timeout_s`: a client that reads nothing for that long is cut off
(`ClientTooSlowError`, via `_Watchdog`), which cancels the work upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import hdrs, web

from dynamo.frontend.inflight import InflightRequest
from dynamo.frontend.responses import DONE

_HIGH_WATER = 64 * 1024


class ClientTooSlowError(ConnectionResetError):
    """The client did not read its stream within the write timeout; its connection is dropped."""


class _Watchdog:
    """Drops a connection whose writes have been stuck behind unread data for `timeout_s`.

    One timer a quarter of the timeout, per stream, instead of a timer per write (which costs
    more than the rest of a short response): a stream is stuck when no write completed and
    the transport still holds data since `timeout_s` ago (detected within 1.25 times that).
    """

    __slots__ = ("_handle", "_loop", "_period_s", "_transport", "fired", "since", "timeout_s")

    def __init__(
        self, transport: asyncio.Transport, timeout_s: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._loop = loop
        self.timeout_s = timeout_s
        self._period_s = timeout_s / 4
        self.since = loop.time()  # when the last write completed
        self.fired = False
        self._handle = loop.call_later(self._period_s, self._check)

    def wrote(self) -> None:
        self.since = self._loop.time()

    def _check(self) -> None:
        stuck_s = self._loop.time() - self.since
        if stuck_s >= self.timeout_s and self._transport.get_write_buffer_size() > 0:
            self.fired = True
            self._transport.abort()  # the pending write fails; closing the stream cancels
            return
        self._handle = self._loop.call_later(self._period_s, self._check)

    def stop(self) -> None:
        self._handle.cancel()

    def error(self) -> ClientTooSlowError:
        return ClientTooSlowError(f"the client read nothing for {self.timeout_s:g} s")


class _Coalescer:
    __slots__ = ("_loop", "_parts", "_scheduled", "_transport", "broken")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []
        self._scheduled = False
        self.broken = False

    def add(self, data: bytes) -> None:
        """Send `data` now if it is this iteration's first, else join it to the next flush."""
        if self._scheduled:
            self._parts.append(data)
            return
        self._scheduled = True
        self._loop.call_soon(self.flush)  # ends this iteration's turn
        self._send(data)

    def take(self) -> bytes:
        data = b"".join(self._parts) if len(self._parts) != 1 else self._parts[0]
        self._parts.clear()
        return data

    def flush(self) -> None:
        self._scheduled = False
        if self._parts:
            self._send(self.take())

    def _send(self, data: bytes) -> None:
        if self._transport.is_closing():
            self.broken = True
            return
        self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def backlog(self) -> int:
        return self._transport.get_write_buffer_size()


async def write_sse(
    request: web.Request,
    resp: web.StreamResponse,
    first: bytes,
    rest: AsyncIterator[bytes],
    *,
    write_timeout_s: float | None = None,
    progress: InflightRequest | None = None,
) -> None:
    """Send `first`, then every chunk of `rest`; the chunk ending in `[DONE]` ends the body.

    `progress` (when given) hears each chunk and whether the stream waits on the worker or
    on the client (see `dynamo.frontend.inflight`)."""
    progress = progress or InflightRequest("", "")
    transport = request.transport
    if write_timeout_s is None or transport is None:
        await _write_sse(request, resp, first, rest, None, progress)
        return
    watchdog = _Watchdog(transport, write_timeout_s, asyncio.get_running_loop())
    try:
        await _write_sse(request, resp, first, rest, watchdog, progress)
    except ConnectionError as exc:
        if watchdog.fired:
            raise watchdog.error() from exc
        raise
    finally:
        watchdog.stop()


async def _write_sse(
    request: web.Request,
    resp: web.StreamResponse,
    first: bytes,
    rest: AsyncIterator[bytes],
    watchdog: _Watchdog | None,
    progress: InflightRequest,
) -> None:
    progress.state = "waiting on client"
    if first.endswith(DONE):
        await resp.write_eof(first)
        progress.wrote()
        return
    await resp.write(first)  # headers + first chunk, through aiohttp
    progress.wrote()
    if watchdog is not None:
        watchdog.wrote()
    transport = request.transport
    # aiohttp chunks an HTTP/1.1 body of unknown length by itself without setting
    # `resp.chunked` (that flag means "asked for with enable_chunked_encoding"): the header
    # it sent is what says whether the body is chunked, so that chunks can be framed here
    if transport is None or resp.headers.get(hdrs.TRANSFER_ENCODING) != "chunked":
        progress.state = "waiting on worker"
        async for chunk in rest:  # HTTP/1.0: not chunked, plain writes
            progress.state = "waiting on client"
            if chunk.endswith(DONE):
                await resp.write_eof(chunk)
                progress.wrote()
                return
            await resp.write(chunk)
            progress.wrote()
            progress.state = "waiting on worker"
            if watchdog is not None:
                watchdog.wrote()
        return
    out = _Coalescer(transport, asyncio.get_running_loop())
    progress.state = "waiting on worker"
    try:
        async for chunk in rest:
            progress.wrote()
            if chunk.endswith(DONE):  # with whatever waits, in one write with the body's end
                progress.state = "waiting on client"
                await resp.write_eof(out.take() + chunk)
                return
            if out.broken or transport.is_closing():
                raise ConnectionResetError("client went away")
            out.add(chunk)
            if out.backlog() > _HIGH_WATER:
                out.flush()
                progress.state = "waiting on client"
                await request.writer.drain()
                progress.state = "waiting on worker"
            if watchdog is not None:
                watchdog.wrote()
    finally:
        out.flush()
