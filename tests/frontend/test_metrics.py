"""`/metrics` of a live frontend: Dynamo's series names and labels, with sane values.

Per-worker gauges (`dynamo_frontend_worker_*`) carry model, worker_id, dp_rank and worker_type
and vanish with their worker; load gauges come from the KV router's bookkeeping, or from the
load the workers push in the other modes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynamo.protocols.kv_events import LoadMetrics
from dynamo.router.config import RouterConfig
from dynamo.testing.fake_worker import FakeRuntime, FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, start_frontend, tiny_card, wait_until

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
WORKER_GAUGES = (
    "worker_active_decode_blocks",
    "worker_active_prefill_tokens",
    "worker_last_time_to_first_token_seconds",
    "worker_last_input_sequence_tokens",
    "worker_last_inter_token_latency_seconds",
)


async def scrape(harness: Harness) -> Series:
    async with aiohttp.ClientSession() as s, s.get(harness.url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((f"dynamo_frontend_{name}", frozenset(labels.items())))


def worker_labels(worker: FakeWorker, dp_rank: int = 0) -> dict[str, str]:
    return {
        "model": MODEL,
        "worker_id": str(worker.instance_id),
        "dp_rank": str(dp_rank),
        "worker_type": "decode",
    }


def worker_series(series: Series, worker: FakeWorker) -> set[str]:
    wid = ("worker_id", str(worker.instance_id))
    return {name for name, labels in series if wid in labels}


@pytest.fixture
async def kv_harness(runtime: FakeRuntime) -> AsyncIterator[Harness]:
    frontend = await start_frontend(runtime, RouterConfig(router_mode="kv"), migration_limit=3)
    yield Harness(runtime, frontend)
    await frontend.stop()


async def test_worker_timing_gauges_follow_the_last_request_and_go_with_the_worker(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    worker = await harness.add(FakeWorker(tiny_card(), script=[5, 6, 7]))
    other = await harness.add(FakeWorker(tiny_card(), script=[5, 6, 7]))
    prompt = [11, 12, 13, 14, 15]
    for _ in range(2):  # round-robin: one request on each worker
        stream = await client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=3, stream=True
        )
        async for _ in stream:
            pass
    series = await scrape(harness)
    for w in (worker, other):
        labels = worker_labels(w)
        assert value(series, "worker_last_input_sequence_tokens", **labels) == 5
        ttft = value(series, "worker_last_time_to_first_token_seconds", **labels)
        assert ttft is not None and 0 < ttft < 60
        itl = value(series, "worker_last_inter_token_latency_seconds", **labels)
        assert itl is not None and 0 <= itl < 60
    # Fake workers push no load, so round-robin has no load gauges to show.
    assert value(series, "worker_active_decode_blocks", **worker_labels(worker)) is None

    await harness.remove(worker)
    series = await scrape(harness)
    assert worker_series(series, worker) == set()
    assert value(series, "worker_last_input_sequence_tokens", **worker_labels(other)) == 5


async def test_pushed_load_feeds_the_load_gauges_outside_kv_mode(harness: Harness) -> None:
    worker = await harness.add(FakeWorker(tiny_card()))
    other = await harness.add(FakeWorker(tiny_card()))
    for w, blocks, tokens in ((worker, 7, 33), (other, 2, 0)):
        load = LoadMetrics(w.instance_id, kv_active_blocks=blocks, active_prefill_tokens=tokens)
        harness.runtime.publish("dynamo.backend.kv_metrics", load.to_wire())
    routed = harness.frontend.models.routed(MODEL)
    assert routed is not None
    policy_loads = getattr(routed.policy, "load_metrics")  # noqa: B009
    await wait_until(lambda: len(policy_loads()) == 2, what="both loads to arrive")
    series = await scrape(harness)
    assert value(series, "worker_active_decode_blocks", **worker_labels(worker)) == 7
    assert value(series, "worker_active_prefill_tokens", **worker_labels(worker)) == 33
    assert value(series, "worker_active_decode_blocks", **worker_labels(other)) == 2

    await harness.remove(worker)
    series = await scrape(harness)
    assert worker_series(series, worker) == set()
    assert value(series, "worker_active_decode_blocks", **worker_labels(other)) == 2


async def test_kv_router_load_gauges_show_requests_in_flight(kv_harness: Harness) -> None:
    harness = kv_harness
    # A worker that never answers: the request stays in prefill as far as the router knows.
    worker = await harness.add(FakeWorker(tiny_card(kv_block_size=4), delay_s=3600))
    labels = worker_labels(worker)
    series = await scrape(harness)
    assert value(series, "worker_active_decode_blocks", **labels) == 0
    assert value(series, "worker_active_prefill_tokens", **labels) == 0

    body = {"model": MODEL, "prompt": list(range(100, 112)), "max_tokens": 2}  # 3 blocks of 4

    async def post() -> None:
        async with s.post(harness.url + "/v1/completions", json=body) as r:
            await r.read()

    async with aiohttp.ClientSession() as s:
        pending = asyncio.create_task(post())
        await wait_until(lambda: bool(worker.active), what="the request to reach the worker")
        series = await scrape(harness)
        assert value(series, "worker_active_prefill_tokens", **labels) == 12
        assert value(series, "worker_active_decode_blocks", **labels) == 3
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    await wait_until(lambda: not worker.active, what="the cancellation to reach the worker")
    series = await scrape(harness)
    assert value(series, "worker_active_prefill_tokens", **labels) == 0
    assert value(series, "worker_active_decode_blocks", **labels) == 0

    await harness.remove(worker)
    assert worker_series(await scrape(harness), worker) == set()


async def test_tokenizer_latency_counts_text_prompts_and_responses(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    await harness.add(FakeWorker(tiny_card(), script=[5, 6]))
    await client.completions.create(model=MODEL, prompt="a b c", max_tokens=2)
    await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    await client.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=2)  # no tokenizing
    series = await scrape(harness)
    assert value(series, "tokenizer_latency_ms_count", operation="tokenize") == 2
    assert value(series, "tokenizer_latency_ms_count", operation="detokenize") == 3
    tokenize_ms = value(series, "tokenizer_latency_ms_sum", operation="tokenize")
    assert tokenize_ms is not None and 0 < tokenize_ms < 60_000
    assert value(series, "tokenizer_latency_ms_bucket", operation="tokenize", le="+Inf") == 2


async def test_output_tokens_count_as_they_stream_even_when_the_request_fails(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    await harness.add(FakeWorker(tiny_card(), script=[5], error_after_tokens=3))
    stream = await client.completions.create(model=MODEL, prompt=[1, 2], max_tokens=8, stream=True)
    with pytest.raises(openai.APIError, match="engine exploded"):  # sent in-band
        async for _ in stream:
            pass
    series = await scrape(harness)
    assert value(series, "output_tokens_total", model=MODEL) == 3
    assert value(series, "output_sequence_tokens_count", model=MODEL) == 0  # finished ones only
    assert (
        value(
            series,
            "requests_total",
            model=MODEL,
            endpoint="completions",
            request_type="stream",
            status="error",
            error_type="internal",
        )
        == 1
    )


async def test_model_gauges_and_hit_rate(harness: Harness, client: openai.AsyncOpenAI) -> None:
    card = tiny_card(
        kv_block_size=16, max_num_seqs=8, max_num_batched_tokens=512, migration_limit=5
    )
    worker = await harness.add(FakeWorker(card, cached_tokens=3))
    await client.completions.create(model=MODEL, prompt=[1, 2, 3, 4, 5, 6], max_tokens=2)
    series = await scrape(harness)
    expected = {
        "model_total_kv_blocks": 100,
        "model_max_num_seqs": 8,
        "model_max_num_batched_tokens": 512,
        "model_context_length": 256,
        "model_kv_cache_block_size": 16,
        "model_migration_limit": 5,  # the card's limit beats the frontend's 3
        "model_workers": 1,
        "kv_hit_rate": 0.5,
        "cached_tokens_sum": 3,
        "output_tokens_total": 2,
    }
    assert {name: value(series, name, model=MODEL) for name in expected} == expected
    assert ("dynamo_frontend_router_queue_pending_requests", frozenset()) not in series

    await harness.remove(worker)  # the last one: the model goes, and its config gauges
    await wait_until(lambda: harness.frontend.models.routed(MODEL) is None, what="model removal")
    series = await scrape(harness)
    assert value(series, "model_workers", model=MODEL) is None
    assert value(series, "model_context_length", model=MODEL) is None
    assert value(series, "output_tokens_total", model=MODEL) == 2  # counters stay


async def test_event_loop_lag_records_a_loop_held_by_synchronous_work(harness: Harness) -> None:
    before = value(await scrape(harness), "event_loop_lag_seconds_count") or 0
    time.sleep(0.2)  # noqa: ASYNC251 (holds the loop the frontend runs on)
    await asyncio.sleep(0.05)
    series = await scrape(harness)
    count = value(series, "event_loop_lag_seconds_count")
    assert count is not None and count > before
    # the timer due during the sleep ran at least 0.1 s late: it is above the 0.1 s bucket
    at_most_100ms = value(series, "event_loop_lag_seconds_bucket", le="0.1")
    assert at_most_100ms is not None and at_most_100ms < count
