"""`PreciseTimer`: the mocker's step sleeps, off uvloop's whole-millisecond timers."""

from __future__ import annotations

import asyncio
import threading

import pytest
import uvloop

from dynamo.engines.mocker.timer import PreciseTimer, clock


def _timer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mocker-timer"]


def test_sleeps_never_end_early_on_uvloop() -> None:
    # Sub-millisecond sleeps that uvloop would round (0.4 ms -> 0 ms, 1.6 ms -> 2 ms from a
    # floored clock): each ends no earlier than asked, in order.
    async def main() -> list[tuple[float, float]]:
        timer = PreciseTimer()
        out = []
        for asked in (0.0004, 0.0016, 0.0031, 0.0063, 0.0004):
            start = clock()
            await timer.sleep(asked)
            out.append((asked, clock() - start))
        timer.close()
        return out

    for asked, slept in uvloop.run(main()):
        assert slept >= asked


async def test_a_zero_sleep_yields_without_the_thread() -> None:
    timer = PreciseTimer()
    ran = []
    asyncio.get_running_loop().call_soon(ran.append, 1)
    await timer.sleep(0)
    assert ran == [1]  # it let the loop run what was ready
    await timer.sleep(-1.0)
    assert timer._thread is None


async def test_a_cancelled_sleep_ends_at_once_and_the_timer_still_works() -> None:
    timer = PreciseTimer()
    task = asyncio.create_task(timer.sleep(30.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    timer.close()  # the thread stops after its (30 s) sleep; a new one serves from now
    start = clock()
    await timer.sleep(0.002)
    assert clock() - start >= 0.002
    timer.close()


async def test_close_stops_the_thread() -> None:
    timer = PreciseTimer()
    await timer.sleep(0.001)
    thread = timer._thread
    assert thread is not None and thread.is_alive()
    timer.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert thread not in _timer_threads()
