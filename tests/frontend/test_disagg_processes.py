"""Disaggregated serving with real processes: `python -m dynamo.frontend` over a prefill mocker
and a decode mocker (file discovery, TCP request plane, ZMQ KV events), the official client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket

import aiohttp
import openai
import pytest

from dynamo.testing.processes import Procs, mocker_args

pytestmark = pytest.mark.slow
MODEL = "tinymodel"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        return await r.text()


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def _worker(procs: Procs, *args: str, speedup: float = 20) -> tuple[object, str]:
    """A mocker worker with its own status server; (process, its base URL)."""
    port = _free_port()
    proc = await procs.spawn(
        *mocker_args(*args, speedup_ratio=speedup), env={"DYN_SYSTEM_PORT": str(port)}
    )
    procs.drain(proc)
    return proc, f"http://127.0.0.1:{port}"


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def _prompt(i: int, words: int = 60) -> str:
    return f"request {i}: " + " ".join(f"word{i}x{j}" for j in range(words))


async def test_every_request_is_prefilled_on_the_prefill_worker_and_decoded_on_the_decode_worker(
    procs: Procs,
) -> None:
    url = await procs.frontend("--router-mode", "kv")
    _, prefill = await _worker(procs, "--disaggregation-mode", "prefill")
    _, decode = await _worker(procs, "--disaggregation-mode", "decode")
    await procs.wait_for_instances(url, 2)
    async with _client(url) as client:
        results = await asyncio.gather(
            *(
                client.completions.create(model=MODEL, prompt=_prompt(i), max_tokens=12)
                for i in range(16)
            )
        )
    assert [r.usage.completion_tokens for r in results if r.usage] == [12] * 16
    front, pre, dec = await _metrics(url), await _metrics(prefill), await _metrics(decode)
    assert _value(front, "dynamo_frontend_disagg_requests_total", path="disaggregated") == 16
    assert _value(front, "dynamo_frontend_disagg_requests_total", path="aggregated") == 0
    assert _value(front, "dynamo_frontend_prefill_duration_seconds_count") == 16
    assert _value(front, "dynamo_frontend_kv_transfer_duration_seconds_count") == 16
    assert _value(pre, "dynamo_component_requests_total", dynamo_component="prefill") == 16
    assert _value(dec, "dynamo_component_requests_total", dynamo_component="backend") == 16
    assert _value(dec, "dynamo_component_kv_transfer_seconds_count") == 16
    # tinymodel: 2 layers x 4 KV heads x 64 dims x K,V x 2 bytes = 2048 bytes per token
    assert _value(dec, "dynamo_component_kv_transfer_bytes_total") > 0
    assert _value(dec, "dynamo_component_kv_transfer_bytes_total") % 2048 == 0


async def test_kill_9_of_the_prefill_worker_under_load_falls_back_to_the_decode_worker(
    procs: Procs,
) -> None:
    url = await procs.frontend("--router-mode", "kv")
    victim, _ = await _worker(procs, "--is-prefill-worker", speedup=2)
    await _worker(procs, "--is-decode-worker", speedup=2)
    await procs.wait_for_instances(url, 2)
    done = 0

    async def one(client: openai.AsyncOpenAI, i: int) -> int:
        nonlocal done
        stream = await client.completions.create(
            model=MODEL,
            prompt=_prompt(i, 200),
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
        tokens = 0
        async for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        done += 1
        return tokens

    async with _client(url) as client:
        tasks = []
        for i in range(40):
            tasks.append(asyncio.create_task(one(client, i)))
            if i == 10:
                for _ in range(600):  # some requests finished through the prefill worker
                    if done >= 3:
                        break
                    await asyncio.sleep(0.02)
                Procs.kill_group(victim)  # SIGKILL: no unregistration, streams cut
            await asyncio.sleep(0.02)
        counts = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    assert counts == [20] * 40
    front = await _metrics(url)
    disagg = _value(front, "dynamo_frontend_disagg_requests_total", path="disaggregated")
    agg = _value(front, "dynamo_frontend_disagg_requests_total", path="aggregated")
    assert disagg >= 3
    assert disagg + agg == 40
    assert agg >= 1
    assert _value(front, "dynamo_frontend_disagg_fallbacks_total") == agg


async def test_conditional_disagg_keeps_a_repeated_prompt_on_the_decode_worker(
    procs: Procs,
) -> None:
    url = await procs.frontend(
        "--router-mode", "kv", "--router-conditional-disagg",
        "--disagg-max-local-prefill-tokens", "64",
    )  # fmt: skip
    _, prefill = await _worker(procs, "--is-prefill-worker")
    await _worker(procs, "--is-decode-worker")
    await procs.wait_for_instances(url, 2)
    long_prompt = _prompt(1, 300)
    async with _client(url) as client:
        first = await client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4)
        assert first.usage is not None and first.usage.prompt_tokens > 600
        for _ in range(600):  # the decode worker's KV events (the pulled blocks) reach the router
            blocks = _value(await _metrics(url), "dynamo_frontend_disagg_decode_kv_index_blocks")
            if blocks * 16 >= first.usage.prompt_tokens - 16:
                break
            await asyncio.sleep(0.05)
        again = await client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4)
        short = await client.completions.create(model=MODEL, prompt="hello there", max_tokens=4)
        other = await client.completions.create(model=MODEL, prompt=_prompt(2, 300), max_tokens=4)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens // 16 * 16
    assert short.usage is not None and other.usage is not None
    front, pre = await _metrics(url), await _metrics(prefill)
    assert _value(front, "dynamo_frontend_disagg_requests_total", path="disaggregated") == 2
    assert _value(front, "dynamo_frontend_disagg_requests_total", path="aggregated") == 2
    assert (
        _value(front, "dynamo_frontend_disagg_local_prefills_total", reason="short_uncached_prompt")
        == 2
    )
    assert _value(pre, "dynamo_component_requests_total") == 2


async def test_stale_transfer_params_are_rejected_and_the_request_is_served_aggregated(
    procs: Procs,
) -> None:
    url = await procs.frontend("--router-mode", "round-robin")
    # the prefill worker's params expire at once: every decode leg finds them stale
    await _worker(procs, "--is-prefill-worker", "--kv-transfer-keep", "0.000001")
    _, decode = await _worker(procs, "--is-decode-worker")
    await procs.wait_for_instances(url, 2)
    async with _client(url) as client:
        unary = await client.completions.create(model=MODEL, prompt=_prompt(1), max_tokens=6)
        stream = await client.completions.create(
            model=MODEL, prompt=_prompt(2), max_tokens=6, stream=True
        )
        streamed = [c async for c in stream]
    assert unary.usage is not None and unary.usage.completion_tokens == 6
    assert streamed[-1].choices[0].finish_reason == "length"
    front, dec = await _metrics(url), await _metrics(decode)
    assert _value(front, "dynamo_frontend_disagg_fallbacks_total", reason="transfer_failed") == 2
    assert _value(front, "dynamo_frontend_disagg_requests_total", path="aggregated") == 2
    assert _value(front, "dynamo_frontend_disagg_requests_total", path="disaggregated") == 0
    # the decode worker refused each decode leg, then served it aggregated
    assert _value(dec, "dynamo_component_errors_total", error_type="KvTransferError") == 2
    assert _value(dec, "dynamo_component_requests_total") == 4


async def test_transfer_params_of_another_block_size_are_rejected(procs: Procs) -> None:
    url = await procs.frontend("--router-mode", "round-robin")
    prefill_proc = await procs.spawn(
        *mocker_args("--is-prefill-worker", block_size=32, speedup_ratio=20)
    )
    procs.drain(prefill_proc)
    await _worker(procs, "--is-decode-worker")
    await procs.wait_for_instances(url, 2)
    async with _client(url) as client:
        reply = await client.completions.create(model=MODEL, prompt=_prompt(3), max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    front = await _metrics(url)
    assert _value(front, "dynamo_frontend_disagg_fallbacks_total", reason="transfer_failed") == 1


async def test_enforce_disagg_answers_503_without_a_prefill_worker(procs: Procs) -> None:
    url = await procs.frontend("--router-mode", "kv", "--enforce-disagg")
    await _worker(procs, "--is-decode-worker")
    await procs.wait_for_instances(url, 1)
    async with aiohttp.ClientSession() as s:
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 2}
        async with s.post(url + "/v1/completions", json=body) as r:
            status, payload = r.status, await r.json()
    assert status == 503
    assert payload["error"]["type"] == "service_unavailable"
    assert "--enforce-disagg" in payload["error"]["message"]
    assert "no_prefill_worker" in payload["error"]["message"]


async def _wait_for_value(url: str, name: str, wanted: float, **labels: str) -> float:
    value = -1.0
    for _ in range(600):
        value = _value(await _metrics(url), name, **labels)
        if value == wanted:
            break
        await asyncio.sleep(0.05)
    return value


async def test_a_client_that_disconnects_during_prefill_cancels_the_prefill_leg(
    procs: Procs,
) -> None:
    url = await procs.frontend("--router-mode", "kv")
    # speedup 0.001: a 2,000-token prefill takes about 49 s, far longer than the polling
    # below, so the leg only ends in time if the disconnect cancelled it
    _, prefill = await _worker(procs, "--is-prefill-worker", speedup=0.001)
    _, decode = await _worker(procs, "--is-decode-worker", speedup=0.001)
    await procs.wait_for_instances(url, 2)
    body = {"model": MODEL, "prompt": list(range(10, 2010)), "max_tokens": 5, "stream": True}
    inflight = "dynamo_component_inflight_requests"
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(session.post(url + "/v1/completions", json=body))
        assert await _wait_for_value(prefill, inflight, 1) == 1
        task.cancel()  # the client goes away before the first token
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await _wait_for_value(prefill, inflight, 0) == 0
    assert _value(await _metrics(decode), "dynamo_component_requests_total") == 0
    assert _value(await _metrics(prefill), "dynamo_component_requests_total") == 1


async def test_a_client_that_disconnects_during_decode_cancels_the_decode_leg(
    procs: Procs,
) -> None:
    url = await procs.frontend("--router-mode", "kv")
    await _worker(procs, "--is-prefill-worker")
    _, decode = await _worker(procs, "--is-decode-worker", speedup=0.2)
    await procs.wait_for_instances(url, 2)
    body = {"model": MODEL, "prompt": _prompt(5), "max_tokens": 5000, "stream": True}
    inflight = "dynamo_component_inflight_requests"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/completions", json=body) as resp,
    ):
        assert resp.status == 200
        for _ in range(3):
            await resp.content.readline()
        assert _value(await _metrics(decode), inflight) == 1
        resp.close()  # drop the connection mid-stream
    assert await _wait_for_value(decode, inflight, 0) == 0


async def test_a_prefill_leg_migrates_to_another_prefill_worker_then_falls_back(
    procs: Procs,
) -> None:
    url = await procs.frontend("--router-mode", "round-robin", "--migration-limit", "1")
    # speedup 0.002: a 2,000-token prefill takes about 24 s, so the kill lands mid-prefill
    first = await _worker(procs, "--is-prefill-worker", speedup=0.002)
    second = await _worker(procs, "--is-prefill-worker", speedup=0.002)
    await _worker(procs, "--is-decode-worker")
    await procs.wait_for_instances(url, 3)
    body = {"model": MODEL, "prompt": list(range(10, 2010)), "max_tokens": 3}
    inflight = "dynamo_component_inflight_requests"
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(session.post(url + "/v1/completions", json=body))
        victim = survivor = None
        for _ in range(600):
            for worker, other in ((first, second), (second, first)):
                if _value(await _metrics(worker[1]), inflight) == 1:
                    victim, survivor = worker, other
            if victim is not None:
                break
            await asyncio.sleep(0.05)
        assert victim is not None and survivor is not None
        Procs.kill_group(victim[0])  # type: ignore[arg-type]
        assert await _wait_for_value(survivor[1], inflight, 1) == 1
        Procs.kill_group(survivor[0])  # type: ignore[arg-type]
        resp = await asyncio.wait_for(task, 60)
        reply = await resp.json()
    # both prefill workers died mid-prefill: the request was served aggregated, not lost
    assert resp.status == 200
    assert reply["usage"]["completion_tokens"] == 3
    front = await _metrics(url)
    assert _value(front, "dynamo_frontend_model_migration_total", migration_type="new_request") == 1
    assert _value(front, "dynamo_frontend_disagg_fallbacks_total", reason="prefill_failed") == 1
