"""The runtime's one backoff: jittered delays within [min, ceiling], doubling ceilings capped
at max, reset after a success, and bounded retries of transient failures."""

from __future__ import annotations

import collections
import random
import statistics

import pytest

from dynamo.runtime.retry import Backoff, retry


def test_each_delay_lies_between_the_floor_and_a_doubling_ceiling_capped_at_max() -> None:
    backoff = Backoff(0.05, 5.0, rng=random.Random(1))
    ceilings, delays = [], []
    for _ in range(20):
        ceilings.append(backoff.ceiling_s)
        delays.append(backoff.next_delay())
    assert ceilings[:8] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0])
    assert ceilings[8:] == [5.0] * 12  # capped
    assert all(0.05 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays) <= 5.0


def test_the_extremes_of_the_random_draw_stay_inside_the_caps() -> None:
    class Extreme(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def uniform(self, a: float, b: float) -> float:
            return a + (b - a) * self.value

    low, high = Backoff(0.05, 5.0, rng=Extreme(0.0)), Backoff(0.05, 5.0, rng=Extreme(1.0))
    assert [low.next_delay() for _ in range(12)] == [0.05] * 12
    assert [high.next_delay() for _ in range(12)][-4:] == [5.0] * 4


def test_reset_starts_again_from_the_floor() -> None:
    backoff = Backoff(0.05, 5.0, rng=random.Random(2))
    for _ in range(10):
        backoff.next_delay()
    assert backoff.ceiling_s == 5.0
    backoff.reset()
    assert backoff.ceiling_s == 0.05
    assert 0.05 <= backoff.next_delay() <= 0.05


def test_clients_that_failed_together_do_not_retry_together() -> None:
    # 200 clients lose etcd at the same instant; where do their 6th retries land?
    rng = random.Random(3)
    landings = []
    for _ in range(200):
        backoff = Backoff(0.05, 5.0, rng=rng)
        landings.append(sum(backoff.next_delay() for _ in range(6)))
    busiest = max(collections.Counter(int(t * 1000) for t in landings).values())
    assert busiest <= 3  # without jitter all 200 would land in the same millisecond
    assert max(landings) - min(landings) > 1.0  # spread over more than a second
    assert statistics.pstdev(landings) > 0.3


def test_the_delays_of_one_attempt_fill_their_range() -> None:
    rng = random.Random(4)
    draws = []
    for _ in range(2000):
        backoff = Backoff(0.05, 5.0, rng=rng)
        for _ in range(4):
            backoff.next_delay()
        draws.append(backoff.next_delay())  # 5th attempt: uniform in [0.05, 0.8]
    assert 0.05 <= min(draws) < 0.1 and 0.75 < max(draws) <= 0.8
    assert statistics.mean(draws) == pytest.approx(0.425, abs=0.03)


@pytest.mark.parametrize(("min_s", "max_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_bad_range_is_refused(min_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="0 < min_s <= max_s"):
        Backoff(min_s, max_s)


class Flaky:
    """Fails with `error` the first `failures` calls, then returns the number of calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


def _transient(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError)


async def test_transient_failures_are_retried_until_the_call_succeeds() -> None:
    op = Flaky(3, ConnectionError("refused"))
    assert await retry(op, transient=_transient, timeout_s=5, backoff=Backoff(0.001, 0.01)) == 4


async def test_a_failure_that_is_not_transient_is_raised_at_once() -> None:
    op = Flaky(3, PermissionError("forbidden"))
    with pytest.raises(PermissionError, match="forbidden"):
        await retry(op, transient=_transient, timeout_s=5, backoff=Backoff(0.001, 0.01))
    assert op.calls == 1


async def test_retries_stop_with_the_last_error_when_the_next_delay_passes_the_deadline() -> None:
    op = Flaky(10**6, ConnectionError("still down"))
    with pytest.raises(ConnectionError, match="still down"):
        await retry(op, transient=_transient, timeout_s=0.3, backoff=Backoff(0.01, 0.05))
    assert op.calls <= 31  # every wait is >= 10 ms and none goes past the 300 ms deadline
