"""How late the frontend's event loop gets to its timers: the wait every request pays on it.

The loop parses HTTP, validates bodies, routes, sends to workers and writes SSE; whatever runs
on it without yielding (a long chat template, a large JSON body, KV events in bulk) delays all
of these for every request at once. `LoopLagMonitor` sleeps `interval_s` in a loop and records
how much later than asked it woke up, into `dynamo_frontend_event_loop_lag_seconds`: the p90
of that histogram under load is the part of a TTFT tail that the loop, not the engine, adds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

DEFAULT_INTERVAL_S = 0.01


class LoopLagMonitor:
    """Observe the loop's lateness every `interval_s` (one timer; about 1 us of work each)."""

    def __init__(
        self, observe: Callable[[float], None], *, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._observe = observe
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._interval_s
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self._observe(max(0.0, loop.time() - due))
