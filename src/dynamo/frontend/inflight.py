"""The frontend's in-flight requests, each with its age and where it waits, for `SIGUSR1`.

`kill -USR1 <frontend pid>` logs (at WARNING, through the frontend's logger) one line per
request still open, oldest first, and the request plane's connections: which requests wait
on the worker, which on the client, and whether a connection to a worker is paused. A request
that never ends shows where it sits without attaching a debugger.

A request's `state` moves through:

- `reading body`: its HTTP body is not in yet;
- `preparing`: parse, tokenize, route, up to the worker's first output;
- `waiting on worker`: streaming, the next chunk has not come from the worker;
- `waiting on client`: streaming, the client has not read what was sent (the write is held by
  back-pressure; `--http-write-timeout-s` cuts it off);
- `answering`: a unary response (or an error) is being sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(slots=True)
class InflightRequest:
    """One open HTTP request; the stream writer updates `state`, `chunks` and `last_chunk`."""

    request_id: str
    path: str
    started: float = field(default_factory=time.monotonic)
    state: str = "reading body"
    chunks: int = 0  # SSE chunks handed to the socket
    last_chunk: float | None = None  # monotonic time of the last one

    def wrote(self) -> None:
        self.chunks += 1
        self.last_chunk = time.monotonic()

    def describe(self, now: float) -> str:
        line = (
            f"{self.request_id} {self.path} age {now - self.started:.1f} s, {self.state}, "
            f"{self.chunks} chunks sent"
        )
        if self.last_chunk is not None:
            line += f" (last {now - self.last_chunk:.1f} s ago)"
        return line


class InflightRequests:
    """The open requests of one frontend (a dict keyed by identity: no cost per chunk)."""

    def __init__(self) -> None:
        self._open: dict[int, InflightRequest] = {}

    def __len__(self) -> int:
        return len(self._open)

    @contextmanager
    def track(self, request_id: str, path: str) -> Iterator[InflightRequest]:
        entry = InflightRequest(request_id, path)
        key = id(entry)
        self._open[key] = entry
        try:
            yield entry
        finally:
            del self._open[key]

    def oldest_first(self) -> list[InflightRequest]:
        return sorted(self._open.values(), key=lambda r: r.started)

    def report(self, extra: list[str] | None = None) -> str:
        """A multi-line text: every open request, oldest first, then `extra` lines."""
        now = time.monotonic()
        entries = self.oldest_first()
        lines = [f"{len(entries)} requests in flight"]
        lines += [f"  {e.describe(now)}" for e in entries]
        lines += extra or []
        return "\n".join(lines)


def task_summary() -> str:
    """The running loop's asyncio tasks counted by coroutine, most first, on one line."""
    names = Counter(
        getattr(task.get_coro(), "__qualname__", type(task.get_coro()).__name__)
        for task in asyncio.all_tasks()
    )
    parts = ", ".join(f"{name} {n}" for name, n in names.most_common())
    return f"{sum(names.values())} asyncio tasks: {parts}"
