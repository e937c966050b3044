"""The frontend process in front of a real mocker process, through the official client.

Models, chat and completions (streaming with usage), max tokens, the errors users hit, and a
client that drops mid-stream freeing the mocker's KV blocks (its own load metrics say so).
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
import pytest_asyncio

from dynamo.testing.processes import Procs, mocker_args

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

_ACTIVE_BLOCKS = re.compile(r"^dynamo_component_kvstats_active_blocks\{[^}]*\} (\S+)$", re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, url: str, system_url: str) -> None:
        self.url = url
        self.system_url = system_url
        self.client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

    async def active_blocks(self) -> float:
        async with aiohttp.ClientSession() as s, s.get(self.system_url + "/metrics") as r:
            return sum(float(v) for v in _ACTIVE_BLOCKS.findall(await r.text()))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # Module-scoped: set up before the per-test isolation, so it isolates itself.
    kv = tmp_path_factory.mktemp("kv")
    procs = Procs({"DYN_FILE_KV": str(kv), "DYN_NAMESPACE": f"test-{uuid.uuid4().hex[:8]}"})
    try:
        url = await procs.frontend()
        port = free_port()
        mocker = await procs.spawn(
            *mocker_args(
                "--max-model-len",
                "512",
                "--system-port",
                str(port),
                model_name="tiny",
                block_size=None,
                speedup_ratio=1,
            )
        )
        procs.drain(mocker)
        await procs.wait_for_instances(url, 1)
        s = Stack(url, f"http://127.0.0.1:{port}")
        yield s
        await s.client.close()
    finally:
        await procs.stop_all()


async def test_models_and_completions(stack: Stack) -> None:
    assert [m.id async for m in stack.client.models.list()] == ["tiny"]
    resp = await stack.client.completions.create(model="tiny", prompt="hello there", max_tokens=7)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 7
    chat = await stack.client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        extra_body={"ignore_eos": True},
    )
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.completion_tokens == 5


async def test_streaming_with_usage_and_prefix_cache(stack: Stack) -> None:
    prompt = "the same long prompt " * 12
    cached = []
    for _ in range(2):
        stream = await stack.client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 12
        details = chunks[-1].usage.prompt_tokens_details
        assert details is not None
        cached.append(details.cached_tokens)
    assert cached[0] == 0 and cached[1] > 0  # the second request hit the mocker's cache


async def test_errors_and_still_serving(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError):
        await stack.client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as info:
        await stack.client.completions.create(model="tiny", prompt="word " * 600, max_tokens=2)
    assert info.value.response.json()["error"]["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        await stack.client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=7)
    async with (
        aiohttp.ClientSession() as s,
        s.post(stack.url + "/v1/completions", data=b"{not json") as r,
    ):
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    resp = await stack.client.completions.create(model="tiny", prompt="still here", max_tokens=3)
    assert resp.usage is not None and resp.usage.completion_tokens == 3


async def test_client_that_drops_frees_the_mockers_blocks(stack: Stack) -> None:
    assert await stack.active_blocks() == 0
    body = {
        "model": "tiny",
        "prompt": "a long story " * 10,
        "max_tokens": 300,
        "stream": True,
        "ignore_eos": True,
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(stack.url + "/v1/completions", json=body) as r,
    ):
        assert r.status == 200
        for _ in range(3):
            await r.content.readline()
        for _ in range(200):
            if await stack.active_blocks() > 0:
                break
            await asyncio.sleep(0.05)
        assert await stack.active_blocks() > 0
    # the connection is closed here, mid-stream
    for _ in range(200):
        if await stack.active_blocks() == 0:
            break
        await asyncio.sleep(0.05)
    assert await stack.active_blocks() == 0
    async with aiohttp.ClientSession() as s, s.get(stack.url + "/metrics") as r:
        assert "dynamo_frontend_disconnected_clients 1.0" in await r.text()
