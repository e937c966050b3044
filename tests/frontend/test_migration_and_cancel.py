"""Request migration when a worker dies mid-stream, and cancellation when a client leaves."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from tokenizers import Tokenizer

from dynamo.testing.fake_worker import FakeRuntime, FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, start_frontend, tiny_card, wait_until


def ids_of(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("stream", [True, False])
async def test_stream_continues_on_another_worker(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer, stream: bool
) -> None:
    # Both workers echo the prompt, so the continuation is checkable token by token.
    dying = await harness.add(FakeWorker(tiny_card(), instance_id=1, fail_after_tokens=3))
    healthy = await harness.add(FakeWorker(tiny_card(), instance_id=2))
    prompt = "one two three four five six seven eight"
    prompt_ids = ids_of(tokenizer, prompt)
    kwargs = {"model": MODEL, "prompt": prompt_ids, "max_tokens": 6}
    if stream:
        chunks = [c async for c in await client.completions.create(stream=True, **kwargs)]
        text = "".join(c.choices[0].text for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        resp = await client.completions.create(**kwargs)
        text, finish = resp.choices[0].text, resp.choices[0].finish_reason
        assert resp.usage is not None and resp.usage.completion_tokens == 6
        assert resp.usage.prompt_tokens == len(prompt_ids)
    # worker 1 produced prompt[0:3]; worker 2 echoes its longer prompt from the start
    expected = prompt_ids[:3] + (prompt_ids + prompt_ids[:3])[:3]
    assert text == tokenizer.decode(expected)
    assert finish == "length"
    retry = healthy.requests[0]
    assert retry["token_ids"] == prompt_ids + prompt_ids[:3]
    assert retry["stop_conditions"]["max_tokens"] == 3
    assert len(dying.requests) == 1
    assert (
        harness.metric(
            "dynamo_frontend_model_migration_total", model=MODEL, migration_type="ongoing_request"
        )
        == 1
    )


async def test_unreachable_worker_is_retried_as_a_new_request(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    dead = await harness.add(FakeWorker(tiny_card(), instance_id=1))
    healthy = await harness.add(FakeWorker(tiny_card(), instance_id=2))
    dead.kill()  # still registered, refuses connections
    resp = await client.completions.create(model=MODEL, prompt="x y z", max_tokens=4)
    assert resp.choices[0].finish_reason == "length"
    assert len(healthy.requests) == 1
    assert (
        harness.metric(
            "dynamo_frontend_model_migration_total", model=MODEL, migration_type="new_request"
        )
        == 1
    )


async def test_many_streams_survive_a_worker_kill(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    workers = [
        await harness.add(FakeWorker(tiny_card(), instance_id=i, delay_s=0.002)) for i in (1, 2, 3)
    ]

    async def one(i: int) -> int:
        stream = await client.completions.create(
            model=MODEL,
            prompt=f"request {i} a b c",
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None
        return usage.completion_tokens

    tasks = [asyncio.create_task(one(i)) for i in range(30)]
    await wait_until(lambda: sum(len(w.requests) for w in workers) >= 20, what="traffic")
    workers[0].kill()
    assert await asyncio.gather(*tasks) == [12] * 30


async def test_migration_limit_zero_fails_the_stream(runtime: FakeRuntime) -> None:
    frontend = await start_frontend(runtime, migration_limit=0)
    harness = Harness(runtime, frontend)
    try:
        await harness.add(FakeWorker(tiny_card(), instance_id=1, fail_after_tokens=2))
        await harness.add(FakeWorker(tiny_card(), instance_id=2))
        async with aiohttp.ClientSession() as s:
            body = {"model": MODEL, "prompt": "a b c d", "max_tokens": 6, "stream": True}
            async with s.post(harness.url + "/v1/completions", json=body) as r:
                raw = (await r.read()).decode()
        events = [e for e in raw.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        assert "worker_unavailable" in events[-2]
    finally:
        await frontend.stop()


async def test_client_disconnect_cancels_the_worker(harness: Harness) -> None:
    worker = await harness.add(FakeWorker(tiny_card(), delay_s=0.01))
    policy = harness.frontend.models.routed(MODEL)
    assert policy is not None
    async with aiohttp.ClientSession() as s:
        body = {"model": MODEL, "prompt": "a b c", "max_tokens": 200, "stream": True}
        async with s.post(harness.url + "/v1/completions", json=body) as r:
            assert r.status == 200
            await r.content.readline()
            assert len(worker.active) == 1
        # leaving the block closes the connection mid-stream
    await wait_until(lambda: not worker.active, what="the worker to stop generating")
    assert len(worker.cancelled) == 1
    await wait_until(
        lambda: harness.metric("dynamo_frontend_disconnected_clients") == 1,
        what="the disconnect metric",
    )
    assert harness.metric("dynamo_frontend_inflight_requests", model=MODEL) == 0


async def test_unary_client_disconnect_cancels_the_worker(harness: Harness) -> None:
    worker = await harness.add(FakeWorker(tiny_card(), delay_s=0.01))
    async with aiohttp.ClientSession() as s:
        body = {"model": MODEL, "prompt": "a b c", "max_tokens": 200}
        task = asyncio.create_task(s.post(harness.url + "/v1/completions", json=body))
        await wait_until(lambda: len(worker.active) == 1, what="generation to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await wait_until(lambda: not worker.active, what="the worker to stop generating")
    assert len(worker.cancelled) == 1
    await wait_until(
        lambda: harness.metric("dynamo_frontend_inflight_requests", model=MODEL) == 0,
        what="inflight to drop",
    )
