"""Write an SSE body with as few socket writes as the stream allows.

Chunks produced in the same event-loop iteration (a worker's outputs that arrived together)
are joined and sent as one HTTP chunk at the end of the iteration, instead of one send per
token. The first chunk goes through aiohttp (it carries the headers), the last one with the end
of the body; backpressure uses aiohttp's drain, bounded by `write_timeout_s`: a client that
reads nothing for that long is cut off (`ClientTooSlowError`), which cancels the work upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

from aiohttp import web

from dynamo.frontend.responses import DONE

_HIGH_WATER = 64 * 1024


class ClientTooSlowError(ConnectionResetError):
    """The client did not read its stream within the write timeout; its connection is dropped."""


async def _bounded(write: Awaitable[None], request: web.Request, timeout_s: float | None) -> None:
    """Await a write that waits for the client to read, for at most `timeout_s`."""
    if timeout_s is None:
        await write
        return
    try:
        async with asyncio.timeout(timeout_s):
            await write
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ClientTooSlowError(f"the client read nothing for {timeout_s:g} s") from None


class _Coalescer:
    __slots__ = ("_loop", "_parts", "_scheduled", "_transport", "broken")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []
        self._scheduled = False
        self.broken = False

    def add(self, data: bytes) -> None:
        self._parts.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def take(self) -> bytes:
        data = b"".join(self._parts) if len(self._parts) != 1 else self._parts[0]
        self._parts.clear()
        return data

    def flush(self) -> None:
        self._scheduled = False
        if not self._parts:
            return
        data = self.take()
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
) -> None:
    """Send `first`, then every chunk of `rest`; the chunk ending in `[DONE]` ends the body."""
    if first.endswith(DONE):
        await _bounded(resp.write_eof(first), request, write_timeout_s)
        return
    await _bounded(resp.write(first), request, write_timeout_s)  # headers + first chunk
    transport = request.transport
    if transport is None or not resp.chunked:
        async for chunk in rest:  # no raw access: plain writes
            if chunk.endswith(DONE):
                await _bounded(resp.write_eof(chunk), request, write_timeout_s)
                return
            await _bounded(resp.write(chunk), request, write_timeout_s)
        return
    out = _Coalescer(transport, asyncio.get_running_loop())
    try:
        async for chunk in rest:
            if chunk.endswith(DONE):
                out.add(chunk)
                await _bounded(resp.write_eof(out.take()), request, write_timeout_s)
                return
            if out.broken or transport.is_closing():
                raise ConnectionResetError("client went away")
            out.add(chunk)
            if out.backlog() > _HIGH_WATER:
                out.flush()
                await _bounded(request.writer.drain(), request, write_timeout_s)
    finally:
        out.flush()
