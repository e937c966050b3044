"""runtime/tasks.py: owned tasks are cancelled and awaited."""

from __future__ import annotations

import asyncio

from dynamo.runtime.tasks import cancel_and_wait


async def test_cancel_and_wait_stops_running_and_tolerates_finished_tasks() -> None:
    stopped: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(name)

    async def done() -> None:
        return None

    tasks = [asyncio.create_task(forever("a")), asyncio.create_task(forever("b"))]
    finished = asyncio.create_task(done())
    await asyncio.sleep(0)
    await finished
    await cancel_and_wait([*tasks, finished])
    assert sorted(stopped) == ["a", "b"]
    assert all(t.done() for t in tasks)
    assert all(t.cancelled() for t in tasks)
