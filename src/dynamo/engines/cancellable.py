"""Read an engine's output stream until it ends or the caller stops the request.

Shared by the real-engine adapters (vLLM, SGLang, TRT-LLM): each step races the engine's next
output against `RequestContext.stopped()`, so a stop is seen even while the engine is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

from dynamo.runtime.transport.base import RequestContext

T = TypeVar("T")

STOPPED: Any = object()  # what `until_stopped` yields once the caller has gone


async def until_stopped(
    stream: AsyncIterator[T], context: RequestContext
) -> AsyncGenerator[T, None]:
    """Items of `stream`; then, if `context` stops first, one `STOPPED` and the end.

    The pending read of `stream` is cancelled on a stop (engines abort the request on that).
    """
    stopped = asyncio.ensure_future(context.stopped())
    try:
        while True:
            step = asyncio.ensure_future(anext(stream))
            done, _ = await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                yield STOPPED
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stopped.cancel()
