"""`PreciseTimer`: the mocker's step sleeps, off uvloop's whole-millisecond timers."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
import uvloop

from dynamo.engines.mocker.timer import PreciseTimer, clock

# Linux only; on Linux a timer that fell back to asyncio.sleep fails these instead of skipping.
needs_timerfd = pytest.mark.skipif(sys.platform != "linux", reason="Linux timerfd only")


def test_sleeps_never_end_early_on_uvloop() -> None:
    # Sub-millisecond sleeps that uvloop would round (0.4 ms -> 0 ms, 1.6 ms -> 2 ms from a
    # floored clock): each ends no earlier than asked.
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


async def test_a_zero_sleep_yields_to_the_loop() -> None:
    timer = PreciseTimer()
    ran = []
    asyncio.get_running_loop().call_soon(ran.append, 1)
    await timer.sleep(0)
    assert ran == [1]
    await timer.sleep(-1.0)
    assert timer._fd is None  # no descriptor for sleeps that need none


@needs_timerfd
async def test_a_cancelled_sleep_does_not_end_the_next_one_early() -> None:
    timer = PreciseTimer()
    task = asyncio.create_task(timer.sleep(0.002))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)  # the cancelled sleep's time passes (it was disarmed)
    start = clock()
    await timer.sleep(0.02)
    assert clock() - start >= 0.02
    timer.close()


@needs_timerfd
async def test_close_releases_the_descriptor_and_a_later_sleep_opens_another() -> None:
    timer = PreciseTimer()
    await timer.sleep(0.001)
    fd = timer._fd
    assert fd is not None
    timer.close()
    assert timer._fd is None
    with pytest.raises(OSError):
        os.fstat(fd)
    start = clock()
    await timer.sleep(0.001)
    assert clock() - start >= 0.001
    timer.close()
