"""Fixtures for runtime tests: real etcd / NATS servers and child processes that clean up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import pytest
from _runtime_helpers import CHILD, Child, Spawn


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start `child.py <args>` with extra env; every child is killed at teardown."""
    children: list[Child] = []

    async def _spawn(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, CHILD, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        child = Child(proc)
        children.append(child)
        if wait:
            await child.wait_ready()
        return child

    yield _spawn
    for child in children:
        if child.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
        await child.proc.wait()
