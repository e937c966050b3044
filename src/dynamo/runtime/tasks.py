"""Owned background tasks: cancel them on shutdown and wait until they have stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel every task, then await each so none outlives its owner's `close`."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until `event` is set or `timeout_s` passes (None: no limit); True when set.

    Use this rather than `asyncio.wait_for(event.wait(), t)` in loops: on Python 3.11
    `wait_for` can swallow a cancellation that arrives as the wait ends (CPython gh-86296), and
    a loop that swallowed one never stops. `asyncio.timeout` does not.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
