"""The one end-of-stream rule: engine errors, aborts, unknown reasons and streams that end
without a finish reason are OpenAI errors (unary and streaming alike), counted as errors."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from dynamo.frontend.generation import finish_reason
from dynamo.runtime.errors import RemoteError, UnavailableError
from dynamo.testing.fake_worker import FakeRuntime, FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, start_frontend, tiny_card

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"


def test_normal_finish_reasons_map_to_openai() -> None:
    assert finish_reason("stop", {}) == "stop"
    assert finish_reason("eos", {}) == "stop"
    assert finish_reason("length", {}) == "length"


def test_abnormal_finish_reasons_raise() -> None:
    with pytest.raises(RemoteError, match="the engine reported an error: out of memory"):
        finish_reason("error", {"error": "out of memory"})
    with pytest.raises(RemoteError, match="no detail given"):
        finish_reason("error", {})
    with pytest.raises(UnavailableError, match="aborted the request"):
        finish_reason("cancelled", {})
    with pytest.raises(RemoteError, match="unknown finish reason 'tool_calls_maybe'"):
        finish_reason("tool_calls_maybe", {})


async def post(harness: Harness, path: str, body: dict[str, Any]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(harness.url + path, json=body) as r:
        return r.status, (await r.read()).decode()


def requests_total(harness: Harness, request_type: str, status: str, error_type: str) -> float:
    return harness.metric(
        "dynamo_frontend_requests_total",
        model=MODEL,
        endpoint="completions",
        request_type=request_type,
        status=status,
        error_type=error_type,
    )


# (worker's last finish reason, HTTP status, error code, metric error_type, message part)
ABNORMAL = [
    ("error", 500, "worker_error", "internal", "the engine reported an error: scripted error"),
    ("cancelled", 503, "service_unavailable", "unavailable", "aborted the request"),
    ("bogus", 500, "worker_error", "internal", "unknown finish reason 'bogus'"),
]


@pytest.mark.parametrize(("reason", "status", "code", "error_type", "message"), ABNORMAL)
async def test_unary_abnormal_finish_is_an_error(
    harness: Harness, reason: str, status: int, code: str, error_type: str, message: str
) -> None:
    await harness.add(FakeWorker(tiny_card(), final_finish=reason))
    got, raw = await post(harness, COMPLETIONS, {"model": MODEL, "prompt": "a b", "max_tokens": 3})
    assert got == status
    err = orjson.loads(raw)["error"]
    assert err["code"] == code and message in err["message"]
    assert requests_total(harness, "unary", "error", error_type) == 1
    assert requests_total(harness, "unary", "success", "") == 0


@pytest.mark.parametrize(("reason", "status", "code", "error_type", "message"), ABNORMAL)
async def test_streamed_abnormal_finish_is_an_error_event_then_done(
    harness: Harness, reason: str, status: int, code: str, error_type: str, message: str
) -> None:
    await harness.add(FakeWorker(tiny_card(), final_finish=reason))
    body = {"model": MODEL, "prompt": "a b", "max_tokens": 3, "stream": True}
    got, raw = await post(harness, COMPLETIONS, body)
    assert got == 200  # two tokens were sent before the end
    events = [e for e in raw.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert events[-2].startswith('data: {"error":') and message in events[-2]
    assert f'"code":"{code}"' in events[-2]
    assert len(events) == 4  # two tokens, the error, [DONE]: no finish_reason chunk
    assert '"finish_reason":"stop"' not in raw
    assert requests_total(harness, "stream", "error", error_type) == 1
    assert requests_total(harness, "stream", "success", "") == 0


async def test_streamed_abnormal_first_output_is_a_plain_http_error(harness: Harness) -> None:
    await harness.add(FakeWorker(tiny_card(), final_finish="error"))
    body = {"model": MODEL, "prompt": "a b", "max_tokens": 1, "stream": True}
    got, raw = await post(harness, COMPLETIONS, body)
    assert got == 500
    assert "scripted error" in raw and "[DONE]" not in raw
    assert requests_total(harness, "stream", "error", "internal") == 1
    assert requests_total(harness, "stream", "error", "cancelled") == 0
    assert harness.metric("dynamo_frontend_queued_requests", model=MODEL) == 0
    assert harness.metric("dynamo_frontend_inflight_requests", model=MODEL) == 0


async def test_chat_client_sees_the_error(harness: Harness, client: openai.AsyncOpenAI) -> None:
    await harness.add(FakeWorker(tiny_card(), final_finish="error"))
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.InternalServerError, match="scripted error"):
        await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    stream = await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=3, stream=True
    )
    with pytest.raises(openai.APIError, match="scripted error"):
        async for _ in stream:
            pass


async def test_unknown_finish_reason_is_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.add(FakeWorker(tiny_card(), final_finish="bogus"))
    with caplog.at_level(logging.WARNING, logger="dynamo.frontend.generation"):
        await post(harness, COMPLETIONS, {"model": MODEL, "prompt": "a", "max_tokens": 2})
    assert "engine finish reason 'bogus' is unknown" in caplog.text


@pytest.mark.parametrize("stream", [False, True])
async def test_stream_ending_without_finish_reason_is_an_error(
    runtime: FakeRuntime, stream: bool
) -> None:
    frontend = await start_frontend(runtime, migration_limit=0)
    harness = Harness(runtime, frontend)
    try:
        await harness.add(FakeWorker(tiny_card(), end_without_finish=True))
        body = {"model": MODEL, "prompt": "a b", "max_tokens": 3, "stream": stream}
        got, raw = await post(harness, COMPLETIONS, body)
        message = "ended the stream without a finish reason"
        if stream:
            assert got == 200
            events = [e for e in raw.split("\n\n") if e]
            assert events[-1] == "data: [DONE]"
            assert message in events[-2] and '"code":"worker_unavailable"' in events[-2]
        else:
            assert got == 503 and message in raw
        kind = "stream" if stream else "unary"
        assert requests_total(harness, kind, "error", "unavailable") == 1
    finally:
        await frontend.stop()


async def test_stream_ending_without_finish_reason_migrates(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    await harness.add(FakeWorker(tiny_card(), instance_id=1, end_without_finish=True))
    await harness.add(FakeWorker(tiny_card(), instance_id=2))
    for _ in range(2):  # round robin: one of them goes to worker 1 first
        out = await client.completions.create(model=MODEL, prompt="a b", max_tokens=5)
        assert out.choices[0].finish_reason == "length"
        assert out.usage is not None and out.usage.completion_tokens == 5
    assert requests_total(harness, "unary", "success", "") == 2
    migrated = harness.metric(
        "dynamo_frontend_model_migration_total", model=MODEL, migration_type="ongoing_request"
    )
    assert migrated == 1
