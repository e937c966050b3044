"""Shared helpers of the runtime tests (child processes, request handlers that never end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from dynamo.runtime.errors import InvalidRequestError
from dynamo.runtime.transport.base import RequestContext

CHILD = str(Path(__file__).with_name("child.py"))


class Child:
    """A `child.py` process; `ready` holds the words of its READY line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ready: list[str] = []

    async def wait_ready(self, timeout_s: float = 30.0) -> list[str]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    err = b""
                    if self.proc.stderr is not None:
                        err = await self.proc.stderr.read()
                    raise RuntimeError(f"child exited before READY: {err.decode()[-3000:]}")
                if line.startswith("READY"):
                    self.ready = line.split()[1:]
                    return self.ready

    async def read_line(self, timeout_s: float = 30.0) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            return (await self.proc.stdout.readline()).decode().strip()


Spawn = Callable[..., Awaitable[Child]]


async def count(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    for i in range(request["n"]):
        yield {"i": i, "rid": ctx.request_id}


async def failing(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    yield {"i": 0}
    if request.get("bad_request"):
        raise InvalidRequestError("max_tokens must be > 0")
    raise ValueError("boom")


class Endless:
    """A streaming handler (`handle`) that yields `{"tick": 1}` until its caller stops.

    `seen_stopped` records whether the request context said stopped when the handler ended;
    `started` and `finished` are set when it begins and ends. `pause_s` spaces the ticks
    (None: none, a producer as fast as the transport lets it).
    """

    def __init__(self, pause_s: float | None = 0.01) -> None:
        self.pause_s = pause_s
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.seen_stopped: list[bool] = []

    async def handle(
        self, request: dict[str, Any], ctx: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        self.started.set()
        try:
            while True:
                yield {"tick": 1}
                if self.pause_s is not None:
                    await asyncio.sleep(self.pause_s)
        finally:
            self.seen_stopped.append(ctx.is_stopped())
            self.finished.set()


class Slow:
    """A streaming handler (`handle`) that waits an hour before its one item; `started` and
    `finished` are set when it begins and ends (cancelled)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finished = asyncio.Event()

    async def handle(
        self, request: dict[str, Any], ctx: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        self.started.set()
        try:
            await asyncio.sleep(3600)
            yield {}
        finally:
            self.finished.set()
