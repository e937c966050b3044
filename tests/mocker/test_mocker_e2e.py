"""`python -m dynamo.mocker` behind `python -m dynamo.frontend`, as real processes.

File discovery, the TCP request plane and ZMQ KV events, driven by the official openai client.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import openai
import pytest

from dynamo.testing.processes import Procs, mocker_args

pytestmark = pytest.mark.slow


async def start(procs: Procs, *frontend_args: str, workers: int = 2) -> openai.AsyncOpenAI:
    url = await procs.frontend(*frontend_args)
    mocker = await procs.spawn(*mocker_args(num_workers=workers))
    procs.drain(mocker)
    await procs.wait_for_instances(url, workers)
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


async def test_two_mocker_instances_in_one_process_serve_chat_and_streams(procs: Procs) -> None:
    client = await start(procs, "--router-mode", "round-robin", workers=2)
    async with client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["tinymodel"]

        chat = await client.chat.completions.create(
            model="tinymodel",
            messages=[{"role": "user", "content": "Hello there"}],
            max_tokens=7,
        )
        assert chat.choices[0].finish_reason == "length"
        assert chat.usage is not None and chat.usage.completion_tokens == 7

        stream = await client.completions.create(
            model="tinymodel",
            prompt="one two three",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        texts, usage = [], None
        async for chunk in stream:
            texts.extend(c.text for c in chunk.choices)
            usage = chunk.usage or usage
        assert usage is not None and usage.completion_tokens == 5
        assert "".join(texts)

        # Every output token is whole text: one chunk each (a byte fragment would be held back
        # by the detokenizer and merged into the next chunk; ~6% of the tiny vocabulary).
        stream = await client.completions.create(
            model="tinymodel", prompt="four five", max_tokens=64, stream=True
        )
        pieces = [c.text async for chunk in stream for c in chunk.choices if c.text]
        assert len(pieces) == 64
        assert "\ufffd" not in "".join(pieces)


async def test_kv_router_sends_a_shared_prefix_to_the_worker_that_caches_it(
    procs: Procs,
) -> None:
    client = await start(procs, "--router-mode", "kv", workers=4)
    async with client:
        for topic in ("apples", "rivers", "engines"):
            prompt = f"{topic}: " + " ".join(f"{topic} number {i}" for i in range(80))
            first = await client.completions.create(model="tinymodel", prompt=prompt, max_tokens=2)
            again = await client.completions.create(
                model="tinymodel", prompt=prompt + " and more", max_tokens=2
            )
            assert first.usage is not None and again.usage is not None
            details = again.usage.prompt_tokens_details
            assert details is not None
            # every full 16-token block of the shared prompt is served from the cache
            assert details.cached_tokens == (first.usage.prompt_tokens // 16) * 16


async def test_a_prompt_longer_than_the_model_fits_is_rejected_and_serving_goes_on(
    procs: Procs,
) -> None:
    url = await procs.frontend("--router-mode", "round-robin")
    mocker = await procs.spawn(
        *mocker_args("--max-model-len", "64", "--num-gpu-blocks-override", "64")
    )
    procs.drain(mocker)
    await procs.wait_for_instances(url, 1)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.completions.create(model="tinymodel", prompt="word " * 200, max_tokens=4)
        assert err.value.status_code == 400
        ok = await client.completions.create(model="tinymodel", prompt="short", max_tokens=3)
        assert ok.usage is not None and ok.usage.completion_tokens == 3
    async with aiohttp.ClientSession() as s, s.get(url + "/health") as r:
        assert r.status == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _component_gauge(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url) as resp:
        text = await resp.text()
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    ]
    return sum(values)


async def test_a_client_that_disconnects_frees_its_slot_on_the_worker(procs: Procs) -> None:
    system_port = _free_port()
    url = await procs.frontend("--router-mode", "round-robin")
    mocker = await procs.spawn(
        *mocker_args(speedup_ratio=None), env={"DYN_SYSTEM_PORT": str(system_port)}
    )
    procs.drain(mocker)
    await procs.wait_for_instances(url, 1)
    metrics_url = f"http://127.0.0.1:{system_port}/metrics"
    body = {
        "model": "tinymodel",
        "prompt": "a long story " * 40,
        "max_tokens": 20000,  # about two minutes of simulated decode at speedup 1
        "stream": True,
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            for _ in range(3):
                await resp.content.readline()
            busy = await _component_gauge(
                session, metrics_url, "dynamo_component_inflight_requests"
            )
            assert busy == 1
            resp.close()  # drop the connection mid-stream
        for _ in range(600):
            inflight = await _component_gauge(
                session, metrics_url, "dynamo_component_inflight_requests"
            )
            blocks = await _component_gauge(
                session, metrics_url, "dynamo_component_kvstats_active_blocks"
            )
            if inflight == 0 and blocks == 0:
                break
            await asyncio.sleep(0.05)
        assert (inflight, blocks) == (0, 0)
