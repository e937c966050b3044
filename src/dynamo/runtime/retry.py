"""Exponential backoff with jitter, for every reconnect and retry loop of the runtime.

Each wait is drawn uniformly between `min_s` and a ceiling that doubles after each failure up
to `max_s` ("full jitter", floored at `min_s`), so clients that lost the same server at the
same moment (a restarted etcd, an API server blip) spread their retries over that range
instead of all calling back in the same millisecond.

`Backoff` is the state of one loop (forever-reconnect loops call `reset()` after a success);
`retry` runs one call again while its failures are transient, for a bounded time. A small
helper rather than tenacity/stamina: three of the loops are long-lived reconnect loops around
async generators (watches that yield between failures), which a call-wrapping decorator
cannot express.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 5.0


class Backoff:
    """The delays of one retry loop: jittered, doubling, capped; `reset` after a success."""

    def __init__(
        self,
        min_s: float = BACKOFF_MIN_S,
        max_s: float = BACKOFF_MAX_S,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got {min_s}, {max_s}")
        self.min_s, self.max_s = min_s, max_s
        self._rng = rng or random.Random()
        self._ceiling_s = min_s

    @property
    def ceiling_s(self) -> float:
        """The longest the next delay can be."""
        return self._ceiling_s

    def next_delay(self) -> float:
        """The next delay in seconds; the ceiling doubles (up to `max_s`) for the one after."""
        delay = self._rng.uniform(self.min_s, self._ceiling_s)
        self._ceiling_s = min(self._ceiling_s * 2, self.max_s)
        return delay

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self._ceiling_s = self.min_s


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    transient: Callable[[Exception], bool],
    timeout_s: float,
    backoff: Backoff | None = None,
) -> T:
    """Await `op()`, calling it again after a jittered delay while it raises an exception for
    which `transient` is true, for about `timeout_s`. The exception that ends the retries (a
    non-transient one, or the last transient one once the next delay would pass the deadline)
    is raised unchanged: callers translate it to a `DynamoError` at their seam."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff = backoff or Backoff()
    while True:
        try:
            return await op()
        except Exception as exc:
            if not transient(exc):
                raise
            delay = backoff.next_delay()
            if loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
