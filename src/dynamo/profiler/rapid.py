"""Rapid measurement: the mocker's real `Scheduler` and timing model in simulated time.

No process, no sleep: each scheduler step advances a clock by the step's simulated duration,
so a point that takes the engine seconds takes the CPU milliseconds. This is the same engine
model the mocker workers of the generated graph run in wall-clock time, so `thorough` on a
mocker graph measures what `rapid` predicts plus the serving stack's own overhead; rapid adds
that overhead to its TTFT from a stated model (`overhead.py`), so that it predicts what a
client sees.
"""

from __future__ import annotations

from collections.abc import Sequence

from dynamo.engines.mocker.sampling import TokenSampler
from dynamo.engines.mocker.scheduler import Scheduler
from dynamo.profiler.hardware import Engine
from dynamo.profiler.measure import DecodePoint, PrefillPoint, prompts, steady_state
from dynamo.profiler.overhead import ServingOverhead

_SAMPLER = TokenSampler(2048, [])


def run_batch(
    scheduler: Scheduler, batch: Sequence[list[int]], max_tokens: int, first_key: int
) -> tuple[list[list[float]], float]:
    """Submit `batch` at once and step until it is done: (token times per request, end time),
    times in simulated seconds from the submission."""
    keys = range(first_key, first_key + len(batch))
    for key, prompt in zip(keys, batch, strict=True):
        scheduler.add_request(
            key, prompt, seed=key, max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True
        )
    times: dict[int, list[float]] = {key: [] for key in keys}
    now = 0.0
    while scheduler.has_work():
        result = scheduler.step()
        if not result.batch:
            raise RuntimeError("the simulated engine cannot schedule its requests (KV too small)")
        now += result.duration_s
        for key, _ in result.emitted:
            times[key].append(now)
    return [times[key] for key in keys], now


class RapidMeasurer:
    """`Measurer` in simulated time; TTFT is the engine's plus `overhead`'s."""

    def __init__(self, overhead: ServingOverhead) -> None:
        self.overhead = overhead

    def prefill(self, engine: Engine, isl: int) -> PrefillPoint:
        scheduler = Scheduler(engine.mocker_config(enable_prefix_caching=False), _SAMPLER)
        times, _ = run_batch(scheduler, prompts(1, isl, seed=isl), 1, 0)
        return PrefillPoint(engine.gpus, isl, times[0][0] * 1000.0 + self.overhead.ttft_ms(isl))

    def decode(self, engine: Engine, isl: int, osl: int, concurrency: int) -> DecodePoint:
        scheduler = Scheduler(engine.mocker_config(), _SAMPLER)
        batch = prompts(concurrency, isl, seed=isl * 1000 + concurrency)
        run_batch(scheduler, batch, 1, 0)  # warm-up: the prompts enter the prefix cache
        times, _ = run_batch(scheduler, batch, osl, concurrency)
        itl_s, tokens_per_s = steady_state(times)
        return DecodePoint.measured(
            engine, isl, osl, concurrency, itl_s=itl_s, tokens_per_s=tokens_per_s
        )

    def close(self) -> None:
        return None
