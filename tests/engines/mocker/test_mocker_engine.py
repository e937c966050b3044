"""MockerEngine end to end: async streaming, cancellation, bad input, DP ranks, lifecycle."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tokenizers import Tokenizer

from dynamo.engines.mocker import engine as engine_module
from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.engine import MAX_LAG_S, MockerEngine, plan_step
from dynamo.engines.mocker.sampling import TokenSampler, seed_for
from dynamo.engines.mocker.timer import PreciseTimer
from dynamo.engines.mocker.transfer import prompt_hashes, transfer_params
from dynamo.mocker.tinymodel import (
    TINY_MODEL_EOS_TOKEN_ID,
    TINY_MODEL_SPECIAL_TOKEN_IDS,
    TINY_MODEL_VOCAB_SIZE,
    tiny_model_path,
)
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.kv_events import KvStored
from dynamo.runtime.errors import (
    EngineShutdownError,
    InvalidRequestError,
    PromptTooLongError,
    UnavailableError,
)
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink

VOCAB = TINY_MODEL_VOCAB_SIZE
FAST: dict[str, Any] = {"num_gpu_blocks": 256, "block_size": 16, "speedup_ratio": 100.0}

Factory = Callable[..., Awaitable[tuple[MockerEngine, RecordingEngineSink]]]


@pytest.fixture
async def make_engine() -> AsyncIterator[Factory]:
    engines: list[MockerEngine] = []

    async def make(**overrides: Any) -> tuple[MockerEngine, RecordingEngineSink]:
        engine = MockerEngine(
            MockerConfig(**{**FAST, **overrides}),
            VOCAB,
            [TINY_MODEL_EOS_TOKEN_ID],
            special_token_ids=TINY_MODEL_SPECIAL_TOKEN_IDS,
        )
        sink = RecordingEngineSink()
        await engine.start(sink)
        engines.append(engine)
        return engine, sink

    yield make
    for engine in engines:
        await engine.shutdown()


def request(rid: str, tokens: list[int], max_tokens: int = 8, **extra: Any) -> EngineRequest:
    req: EngineRequest = {
        "request_id": rid,
        "model": "tiny",
        "token_ids": tokens,
        "stop_conditions": {"max_tokens": max_tokens},
        "sampling_options": {},
    }
    req.update(extra)  # type: ignore[typeddict-item]
    return req


async def collect(engine: MockerEngine, req: EngineRequest) -> list[EngineOutput]:
    return [out async for out in engine.generate(req, RequestContext(req["request_id"]))]


def tokens_of(outputs: list[EngineOutput]) -> list[int]:
    return [t for out in outputs for t in out.get("token_ids", [])]


def expected_tokens(rid: str, n: int, seed: int | None = None) -> list[int]:
    sampler = TokenSampler(VOCAB, TINY_MODEL_SPECIAL_TOKEN_IDS)
    return [sampler.token(seed_for(rid, seed), i) for i in range(n)]


async def test_concurrent_requests_stream_their_own_deterministic_tokens(
    make_engine: Factory,
) -> None:
    engine, _ = await make_engine()
    reqs = [request(f"r{i}", list(range(10, 60 + 7 * i)), max_tokens=5 + i) for i in range(6)]
    results = await asyncio.gather(*(collect(engine, r) for r in reqs))
    for i, outputs in enumerate(results):
        assert tokens_of(outputs) == expected_tokens(f"r{i}", 5 + i)
        final = outputs[-1]
        assert final["finish_reason"] == "length"
        assert final["usage"] == {
            "prompt_tokens": 50 + 7 * i,
            "completion_tokens": 5 + i,
            "cached_tokens": 0,
        }
        assert all("finish_reason" not in out for out in outputs[:-1])
    assert engine.metrics()[0].active_kv_blocks == 0


async def test_a_seed_fixes_the_output_and_a_repeated_prompt_is_served_from_cache(
    make_engine: Factory,
) -> None:
    engine, _ = await make_engine()
    prompt = list(range(100, 150))
    first = await collect(engine, request("a", prompt, sampling_options={"seed": 42}))
    second = await collect(engine, request("b", prompt, sampling_options={"seed": 42}))
    assert tokens_of(first) == tokens_of(second) == expected_tokens("x", 8, seed=42)
    assert first[-1]["usage"]["cached_tokens"] == 0
    assert second[-1]["usage"]["cached_tokens"] == 48  # 3 full blocks of 16
    assert engine.metrics()[0].prefix_cache_hit_rate == pytest.approx(48 / 100)


async def test_outputs_decode_to_text_with_the_tiny_model_tokenizer(make_engine: Factory) -> None:
    tokenizer = Tokenizer.from_file(f"{tiny_model_path()}/tokenizer.json")
    assert tokenizer.get_vocab_size() == VOCAB
    engine, _ = await make_engine()
    prompt = tokenizer.encode("hello mocker world").ids
    out = tokens_of(await collect(engine, request("t", prompt, max_tokens=20)))
    assert not set(out) & set(TINY_MODEL_SPECIAL_TOKEN_IDS)
    assert tokenizer.decode(out).strip()


async def test_a_too_long_prompt_fails_alone_and_the_engine_keeps_serving(
    make_engine: Factory,
) -> None:
    engine, _ = await make_engine(max_model_len=100)
    ok = asyncio.create_task(collect(engine, request("ok", [5] * 50, max_tokens=30)))
    with pytest.raises(PromptTooLongError, match=r"101 tokens.*at most 100") as info:
        await collect(engine, request("long", [5] * 101))
    assert info.value.param == "token_ids"
    assert tokens_of(await ok) == expected_tokens("ok", 30)
    assert tokens_of(await collect(engine, request("after", [5] * 10, max_tokens=2)))


async def test_a_prompt_larger_than_the_whole_cache_is_refused(make_engine: Factory) -> None:
    engine, _ = await make_engine(num_gpu_blocks=4, block_size=16)
    with pytest.raises(PromptTooLongError, match="KV cache of 64 tokens"):
        await collect(engine, request("big", [5] * 65))


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"token_ids": []}, "token_ids"),
        ({"token_ids": [1, VOCAB]}, "token_ids"),
        ({"token_ids": [1, -1]}, "token_ids"),
        ({"token_ids": [1, "2"]}, "token_ids"),
        ({"token_ids": [1, True]}, "token_ids"),
        ({"token_ids": [1, 2.0]}, "token_ids"),
        ({"stop_conditions": {"max_tokens": 0}}, "max_tokens"),
        ({"stop_conditions": {"max_tokens": 2, "min_tokens": 3}}, "min_tokens"),
        ({"extra_args": {"dp_rank": 1}}, "dp_rank"),
    ],
)
async def test_bad_requests_are_invalid_request_errors(
    make_engine: Factory, changes: dict[str, Any], param: str
) -> None:
    engine, _ = await make_engine()
    req = request("bad", [5, 6, 7])
    req.update(changes)  # type: ignore[typeddict-item]
    with pytest.raises(InvalidRequestError) as info:
        await collect(engine, req)
    assert info.value.param == param
    assert engine.metrics()[0].waiting_requests == 0


async def test_stopping_the_context_cancels_and_frees_blocks(make_engine: Factory) -> None:
    engine, _ = await make_engine(speedup_ratio=20.0)
    ctx = RequestContext("c")
    outputs: list[EngineOutput] = []
    async for out in engine.generate(request("c", [5] * 40, max_tokens=100_000), ctx):
        outputs.append(out)
        if len(outputs) == 3:
            ctx.stop()
    final = outputs[-1]
    assert final["finish_reason"] == "cancelled"
    assert final["usage"]["completion_tokens"] == len(tokens_of(outputs))
    assert tokens_of(outputs) == expected_tokens("c", len(tokens_of(outputs)))
    metrics = engine.metrics()[0]
    assert (metrics.active_kv_blocks, metrics.running_requests) == (0, 0)


async def test_closing_the_iterator_frees_blocks(make_engine: Factory) -> None:
    engine, _ = await make_engine(speedup_ratio=20.0)
    stream = engine.generate(request("x", [5] * 40, max_tokens=100_000), RequestContext("x"))
    assert (await anext(stream))["token_ids"]
    assert engine.metrics()[0].active_kv_blocks > 0
    await stream.aclose()  # type: ignore[attr-defined]
    metrics = engine.metrics()[0]
    assert (metrics.active_kv_blocks, metrics.running_requests) == (0, 0)


async def test_a_stopped_waiting_request_is_dropped_from_the_queue(make_engine: Factory) -> None:
    engine, _ = await make_engine(max_num_seqs=1, speedup_ratio=20.0)
    busy = engine.generate(request("busy", [5] * 20, max_tokens=100_000), RequestContext("b"))
    await anext(busy)
    ctx = RequestContext("w")
    ctx.stop()
    outputs = [out async for out in engine.generate(request("w", [6] * 20), ctx)]
    assert outputs == [
        {
            "token_ids": [],
            "finish_reason": "cancelled",
            "usage": {"prompt_tokens": 20, "completion_tokens": 0, "cached_tokens": 0},
        }
    ]
    assert engine.metrics()[0].waiting_requests == 0
    await busy.aclose()  # type: ignore[attr-defined]


async def test_the_sink_gets_kv_events_and_load_changes(make_engine: Factory) -> None:
    engine, sink = await make_engine()
    await collect(engine, request("s", list(range(10, 74)), max_tokens=3))
    stored = [e.data for e in sink.kv_events if isinstance(e.data, KvStored)]
    assert stored and stored[0].parent_hash is None
    assert [e.event_id for e in sink.kv_events] == list(range(len(sink.kv_events)))
    assert sink.load_changes >= 2  # busy, then idle


async def test_data_parallel_ranks_have_their_own_caches_and_events(make_engine: Factory) -> None:
    engine, sink = await make_engine(data_parallel_size=2)
    prompt = list(range(10, 60))
    await collect(engine, request("a", prompt, extra_args={"dp_rank": 1}))
    again = await collect(engine, request("b", prompt, extra_args={"dp_rank": 0}))
    assert again[-1]["usage"]["cached_tokens"] == 0  # rank 0 never saw it
    hit = await collect(engine, request("c", prompt, extra_args={"dp_rank": 1}))
    assert hit[-1]["usage"]["cached_tokens"] == 48
    assert [m.dp_rank for m in engine.metrics()] == [0, 1]
    for rank in (0, 1):
        ids = [e.event_id for e in sink.kv_events if e.dp_rank == rank]
        assert ids == list(range(len(ids))) and ids


async def test_start_honours_startup_time_and_reports_engine_info() -> None:
    engine = MockerEngine(MockerConfig(startup_time_s=0.05, max_model_len=4096), VOCAB, [2])
    loop = asyncio.get_running_loop()
    before = loop.time()
    info = await engine.start(RecordingEngineSink())
    assert loop.time() - before >= 0.049  # timers may fire up to a clock tick early
    assert (info.kv_block_size, info.total_kv_blocks, info.context_length) == (64, 16384, 4096)
    assert (info.max_num_seqs, info.max_num_batched_tokens, info.data_parallel_size) == (
        256,
        8192,
        1,
    )
    await engine.shutdown()


async def test_generate_needs_a_started_engine_and_shutdown_ends_streams() -> None:
    engine = MockerEngine(MockerConfig(**{**FAST, "speedup_ratio": 20.0}), VOCAB, [2])
    with pytest.raises(UnavailableError, match="not started"):
        await collect(engine, request("early", [5]))
    await engine.start(RecordingEngineSink())
    stream = engine.generate(request("long", [5] * 10, max_tokens=100_000), RequestContext("l"))
    await anext(stream)
    await engine.shutdown()
    with pytest.raises(EngineShutdownError):
        async for _ in stream:
            pass
    with pytest.raises(EngineShutdownError):
        await collect(engine, request("late", [5]))


async def test_zero_speedup_runs_without_delays(make_engine: Factory) -> None:
    engine, _ = await make_engine(speedup_ratio=0.0)
    outputs = await collect(engine, request("z", [5] * 30, max_tokens=200))
    assert len(tokens_of(outputs)) == 200


async def test_random_cancellations_leave_no_blocks_behind(make_engine: Factory) -> None:
    engine, _ = await make_engine(num_gpu_blocks=64, block_size=8, speedup_ratio=0.0)
    rng = random.Random(3)

    async def client(i: int) -> None:
        ctx = RequestContext(f"r{i}")
        prompt = [rng.randrange(3, 40) for _ in range(rng.randint(1, 120))]
        stream = engine.generate(request(f"r{i}", prompt, max_tokens=rng.randint(1, 60)), ctx)
        how, after = rng.choice(["stop", "close", "cancel", "none"]), rng.randint(0, 5)
        seen = 0
        async for out in stream:
            seen += 1
            if seen > after and how == "stop":
                ctx.stop()
            elif seen > after and how == "close":
                await stream.aclose()  # type: ignore[attr-defined]
                return
            elif seen > after and how == "cancel":
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)
            if out.get("finish_reason"):
                assert out["usage"]["completion_tokens"] <= 60

    tasks = [asyncio.create_task(client(i)) for i in range(60)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results
    (scheduler,) = engine.schedulers
    assert scheduler.consistency_errors() == []
    assert (scheduler.kv.active_blocks, scheduler.num_running, scheduler.num_waiting) == (0, 0, 0)


def record_step_sleeps(
    monkeypatch: pytest.MonkeyPatch, engine: MockerEngine, oversleep_s: float = 0.0
) -> tuple[list[float], list[float]]:
    """(sleeps the rank loop asked for, simulated step durations), in step order; each of
    the loop's sleeps lasts `oversleep_s` longer than asked (a CPU that wakes it late)."""
    asked: list[float] = []
    durations: list[float] = []
    real_sleep = PreciseTimer.sleep

    async def sleep(timer: PreciseTimer, delay: float) -> None:
        asked.append(delay)
        await real_sleep(timer, delay + oversleep_s)

    scheduler = engine.schedulers[0]
    real_step = scheduler.step

    def step() -> Any:
        result = real_step()
        durations.append(result.duration_s)
        return result

    monkeypatch.setattr(PreciseTimer, "sleep", sleep)
    monkeypatch.setattr(scheduler, "step", step)
    return asked, durations


async def test_an_idle_ranks_first_step_is_timed_from_the_requests_arrival(
    make_engine: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mocker's own work on a request (here a slow add_request: 50 ms of blocked CPU)
    # comes out of the simulated prefill time instead of adding to it.
    engine, _ = await make_engine(speedup_ratio=0.1)
    asked, durations = record_step_sleeps(monkeypatch, engine)
    scheduler = engine.schedulers[0]
    real_add = scheduler.add_request

    def slow_add(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return real_add(*args, **kwargs)

    monkeypatch.setattr(scheduler, "add_request", slow_add)
    out = await collect(engine, request("slow", list(range(10, 74)), max_tokens=1))
    assert len(tokens_of(out)) == 1
    assert durations[0] > 0.1  # a 64-token prefill at a tenth of the speed: ~175 ms
    assert asked[0] <= durations[0] - 0.05


async def test_late_wake_ups_do_not_accumulate_over_steps(
    make_engine: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every step's sleep overshoots by 10 ms; the next step sleeps that much less, since
    # steps end at the previous step's planned end plus their duration, not "now" plus it.
    engine, _ = await make_engine(speedup_ratio=1.0)
    asked, durations = record_step_sleeps(monkeypatch, engine, oversleep_s=0.01)
    out = await collect(engine, request("late", list(range(10, 74)), max_tokens=6))
    assert len(tokens_of(out)) == 6
    assert len(asked) == len(durations) >= 6
    for want, got in zip(durations[1:], asked[1:], strict=True):
        assert got <= max(0.0, want - 0.01) + 1e-9


def test_the_step_plan_adds_durations_and_drops_lag_beyond_the_bound() -> None:
    deadline, sleep_s = plan_step(1.0, 1.0, 0.0069)  # on time
    assert deadline == pytest.approx(1.0069) and sleep_s == pytest.approx(0.0069)
    deadline, sleep_s = plan_step(1.0, 1.003, 0.0069)  # woke 3 ms after the plan
    assert deadline == pytest.approx(1.0069) and sleep_s == pytest.approx(0.0039)
    deadline, sleep_s = plan_step(1.0, 2.0, 0.0069)  # a stall: the plan restarts near now
    assert deadline == pytest.approx(2.0 - MAX_LAG_S + 0.0069) and sleep_s == 0.0


async def test_the_step_plan_runs_on_the_engines_fine_clock(
    make_engine: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvloop's loop.time() is whole milliseconds: a plan on it would sleep up to 1 ms too
    # long. On a fake fine clock where every sleep overshoots by 0.4 ms, each later step
    # asks for exactly its duration less that overshoot, and the steps keep the plan's pace.
    engine, _ = await make_engine(speedup_ratio=1.0)
    now = [1000.0]
    monkeypatch.setattr(engine_module, "clock", lambda: now[0])
    asked: list[float] = []
    durations: list[float] = []
    real_step = engine.schedulers[0].step

    async def sleep(timer: PreciseTimer, delay: float) -> None:
        asked.append(delay)
        now[0] += delay + 0.0004
        await asyncio.sleep(0)

    def step() -> Any:
        result = real_step()
        durations.append(result.duration_s)
        return result

    monkeypatch.setattr(PreciseTimer, "sleep", sleep)
    monkeypatch.setattr(engine.schedulers[0], "step", step)
    out = await collect(engine, request("fine", list(range(10, 74)), max_tokens=8))
    assert len(tokens_of(out)) == 8
    for want, got in zip(durations[1:], asked[1:], strict=True):
        assert got == pytest.approx(want - 0.0004, abs=1e-9)


@pytest.mark.parametrize("caching", [True, False])
async def test_a_prefill_decode_pair_hashes_each_prompt_once_with_the_same_result(
    make_engine: Factory, caching: bool
) -> None:
    # The prefill worker's params reuse its scheduler's hashes (when it has them); the decode
    # worker hands the hashes it checked to its scheduler: same params, same KV events as
    # hashing afresh at each step.
    prompt = [10 + (7 * i) % 1900 for i in range(16 * 5 + 3)]  # 5 full blocks of 16 and 3
    prefill, _ = await make_engine(disaggregation_mode="prefill", enable_prefix_caching=caching)
    decode, sink = await make_engine(disaggregation_mode="decode", kv_transfer_bandwidth_gb_s=0)
    first = await collect(prefill, request("pd", prompt, max_tokens=1))
    params = first[-1]["disaggregated_params"]
    fresh = transfer_params(prompt, 16, now_s=0.0, keep_s=0.0)
    assert (
        params["kv_transfer_params"]["block_hashes"]
        == (  # type: ignore[index]
            fresh["kv_transfer_params"]["block_hashes"]  # type: ignore[index]
        )
    )
    out = await collect(decode, request("pd", prompt, max_tokens=4, disaggregated_params=params))
    assert tokens_of(out) == expected_tokens("pd", 4)
    stored = [
        b.block_hash for e in sink.kv_events if isinstance(e.data, KvStored) for b in e.data.blocks
    ]
    assert stored[:5] == prompt_hashes(prompt, 16)


async def test_the_step_loop_sleeps_on_its_ranks_timer_and_shutdown_closes_it(
    make_engine: Factory,
) -> None:
    engine, _ = await make_engine(speedup_ratio=1.0)
    out = await collect(engine, request("t", list(range(10, 30)), max_tokens=3))
    assert len(tokens_of(out)) == 3
    (rank,) = engine._ranks
    if sys.platform == "linux":
        assert rank.timer._fd is not None  # the steps slept on the rank's timer
    await engine.shutdown()
    assert rank.timer._fd is None


async def test_a_steps_tokens_reach_their_stream_before_the_next_step_is_computed(
    make_engine: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A heavy next step (a prompt joining) must not hold back tokens already due: each
    # token is in its consumer's hands before the scheduler computes the following step.
    engine, _ = await make_engine()
    log: list[str] = []
    scheduler = engine.schedulers[0]
    real_step = scheduler.step

    def step() -> Any:
        log.append("step")
        return real_step()

    monkeypatch.setattr(scheduler, "step", step)
    stream = engine.generate(
        request("order", list(range(10, 30)), max_tokens=4), RequestContext("order")
    )
    async for out in stream:
        log.extend("token" for _ in out.get("token_ids", []))
    assert log[:8] == ["step", "token"] * 4
