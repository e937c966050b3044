"""`LoopLagMonitor`: how late the event loop runs a timer, observed while it runs."""

from __future__ import annotations

import asyncio
import time

import pytest

from dynamo.frontend.loop_lag import LoopLagMonitor


async def test_a_blocked_loop_is_observed_as_late_and_stop_ends_the_task() -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(lags.append, interval_s=0.01)
    monitor.start()
    monitor.start()  # idempotent: one task
    await asyncio.sleep(0.05)
    time.sleep(0.15)  # noqa: ASYNC251 (the point: synchronous work on the loop)
    await asyncio.sleep(0.05)
    await monitor.stop()
    assert lags and min(lags) >= 0
    assert max(lags) >= 0.1  # the timer due during the block ran after it
    n = len(lags)
    await asyncio.sleep(0.05)
    assert len(lags) == n  # stopped: nothing more observed
    await monitor.stop()  # stopping twice is fine


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        LoopLagMonitor(lambda _: None, interval_s=0)
