"""Shared helpers of the runtime tests (child processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

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
