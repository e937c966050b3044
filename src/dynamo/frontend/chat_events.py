"""Re-encode our own chat-completion SSE stream as another API's streaming events.

`/v1/responses` and `/v1/messages` are served as chat completions; their streams read the chat
stream's bytes (whole `data: ...` events per write) and hand each parsed chunk to an
`EventEncoder` that knows the other API's event shapes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

import orjson


class EventEncoder(Protocol):
    """Turns chat-completion chunks into one API's SSE event bytes."""

    def start(self) -> bytes: ...

    def chunk(self, obj: dict[str, Any]) -> bytes: ...

    def error(self, body: dict[str, Any]) -> bytes: ...

    def end(self) -> bytes: ...


async def convert(
    events: EventEncoder, first: bytes, rest: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """The chat stream `first` + `rest` as `events`' stream; closing this closes the chat
    stream (which cancels the work upstream)."""
    try:
        yield events.start() + _convert_blob(events, first)
        async for blob in rest:
            out = _convert_blob(events, blob)
            if out:
                yield out
    finally:
        await rest.aclose()


def _convert_blob(events: EventEncoder, blob: bytes) -> bytes:
    out = b""
    for raw in blob.split(b"\n\n"):
        if not raw.startswith(b"data: "):
            continue
        data = raw[len(b"data: ") :]
        if data == b"[DONE]":
            out += events.end()
            continue
        obj = orjson.loads(data)
        out += events.error(obj) if "error" in obj else events.chunk(obj)
    return out
