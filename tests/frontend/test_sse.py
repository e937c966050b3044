"""`write_sse` over a real aiohttp server: a stream's first chunk of a loop iteration leaves at
once, the chunks it produces after it in that iteration leave together as one HTTP chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from dynamo.frontend.responses import DONE
from dynamo.frontend.sse import write_sse

FIRST = b'data: {"first": true}\n\n'
EVENTS = [f'data: {{"i": {i}}}\n\n'.encode() for i in range(5)]


async def together(sent: list[bytes]) -> AsyncIterator[bytes]:
    """Every chunk at once, as when a worker's outputs arrive in one read."""
    for event in EVENTS:
        yield event
    yield DONE


async def one_per_turn(sent: list[bytes]) -> AsyncIterator[bytes]:
    """A chunk per loop iteration, as tokens come; each must be on the socket at once."""
    for event in EVENTS:
        yield event
        # resumed in the same loop iteration, right after write_sse took `event`
        assert any(event in data for data in sent), "the chunk waited for the iteration's end"
        await asyncio.sleep(0)
    yield DONE


def handler(
    events: Callable[[list[bytes]], AsyncIterator[bytes]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler streaming `events(sent)`, where `sent` lists the socket writes so far."""

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        transport = request.transport
        assert transport is not None
        sent: list[bytes] = []
        write = transport.write

        def recording_write(data: bytes | bytearray | memoryview) -> None:
            sent.append(bytes(data))
            write(data)

        transport.write = recording_write  # type: ignore[method-assign]
        await write_sse(request, resp, FIRST, events(sent), write_timeout_s=30)
        return resp

    return handle


async def http_chunks(
    events: Callable[[list[bytes]], AsyncIterator[bytes]],
) -> tuple[str | None, list[bytes]]:
    app = web.Application()
    app.router.add_get("/", handler(events))
    async with (
        TestServer(app) as server,
        aiohttp.ClientSession() as session,
        session.get(server.make_url("/")) as r,
    ):
        chunks, part = [], b""
        async for data, end_of_chunk in r.content.iter_chunks():
            part += data
            if end_of_chunk:
                chunks.append(part)
                part = b""
        if part:
            chunks.append(part)
        return r.headers.get("Transfer-Encoding"), chunks


async def test_chunks_produced_in_one_loop_turn_leave_as_one_http_chunk() -> None:
    encoding, chunks = await http_chunks(together)
    assert encoding == "chunked"
    # the first with the headers; the iteration's first event at once; the rest of that
    # iteration's events and the end of the body together
    assert chunks == [FIRST, EVENTS[0], b"".join([*EVENTS[1:], DONE])]


async def test_a_chunk_alone_in_its_loop_turn_is_written_at_once() -> None:
    encoding, chunks = await http_chunks(one_per_turn)
    assert encoding == "chunked"
    assert chunks == [FIRST, *EVENTS, DONE]
