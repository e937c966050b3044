"""runtime/tasks.py: owned tasks are cancelled and awaited; bounded event waits stay cancellable."""

from __future__ import annotations

import asyncio

from dynamo.runtime.tasks import cancel_and_wait, wait_event


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


async def test_wait_event_reports_set_and_timeout() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True
    assert await wait_event(event, None) is True


async def test_wait_event_never_swallows_a_cancellation() -> None:
    """Cancelled in the same loop turn as its event is set, a waiting loop still stops
    (`asyncio.wait_for` on Python 3.11 returned normally here and the loop ran on)."""
    event = asyncio.Event()

    async def loop_forever() -> None:
        while True:
            await wait_event(event, 10.0)
            event.clear()

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done and task.cancelled()
