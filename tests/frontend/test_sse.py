"""`write_sse` over a real aiohttp server: chunks produced together leave as one HTTP chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from dynamo.frontend.responses import DONE
from dynamo.frontend.sse import write_sse

FIRST = b'data: {"first": true}\n\n'
EVENTS = [f'data: {{"i": {i}}}\n\n'.encode() for i in range(5)]


async def together() -> AsyncIterator[bytes]:
    """Every chunk at once, as when a worker's outputs arrive in one read."""
    for event in EVENTS:
        yield event
    yield DONE


async def handler(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await write_sse(request, resp, FIRST, together(), write_timeout_s=30)
    return resp


async def http_chunks() -> tuple[str | None, list[bytes]]:
    app = web.Application()
    app.router.add_get("/", handler)
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
    encoding, chunks = await http_chunks()
    assert encoding == "chunked"
    # the first one with the headers, then the rest and the end of the body together
    assert chunks == [FIRST, b"".join([*EVENTS, DONE])]
