"""Every bad request gets an OpenAI-shaped error with the right status, and serving goes on."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from dynamo.frontend.preprocess import INLINE_ENCODE_CHARS
from dynamo.testing.fake_worker import FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, tiny_card

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


async def post(harness: Harness, path: str, body: bytes | dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
        async with s.post(harness.url + path, **kwargs) as r:
            return r.status, await r.json()


def assert_openai_error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    return err


async def still_serving(client: openai.AsyncOpenAI) -> None:
    resp = await client.completions.create(model=MODEL, prompt="hello", max_tokens=2)
    assert resp.choices[0].finish_reason == "length"


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kw}


@pytest.mark.parametrize(
    ("path", "body", "param", "needle"),
    [
        (CHAT, b'{"model": "tiny", "messages": [', None, "Invalid JSON"),
        (CHAT, b"[1, 2]", None, "JSON object"),
        (CHAT, b"", None, "Invalid JSON"),
        (CHAT, chat(temperature="hot"), "temperature", "valid number"),
        (CHAT, chat(temperature=2.5), "temperature", "less than or equal to 2"),
        (CHAT, chat(top_p=0), "top_p", "greater than 0"),
        (CHAT, chat(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (CHAT, chat(max_tokens="5"), "max_tokens", "valid integer"),
        (CHAT, chat(n=17), "n", "less than or equal to 16"),
        (CHAT, chat(stream="yes"), "stream", "valid boolean"),
        (CHAT, chat(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (CHAT, chat(stop=5), "stop", "string or array"),
        (CHAT, chat(stream_options={"include_usage": True}), "stream_options", "stream is true"),
        (CHAT, {"model": MODEL, "messages": []}, "messages", "at least 1"),
        (CHAT, {"model": MODEL}, "messages", "Field required"),
        (CHAT, {"messages": [{"role": "user", "content": "x"}]}, "model", "Field required"),
        (CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role", "'user'"),
        (COMPLETIONS, {"model": MODEL, "prompt": "x", "logprobs": 9}, "logprobs", "less than"),
        (COMPLETIONS, {"model": MODEL, "prompt": ["a", "b"]}, "prompt", "batched"),
        (COMPLETIONS, {"model": MODEL, "prompt": [99999]}, "prompt", "outside the vocabulary"),
        (
            COMPLETIONS,
            {"model": MODEL, "prompt": "x", "echo": True, "logprobs": 1},
            "echo",
            "echo with logprobs is not supported",
        ),
        (
            COMPLETIONS,
            {"model": MODEL, "prompt": "x", "min_tokens": 9, "max_tokens": 2},
            "min_tokens",
            "must not exceed",
        ),
    ],
)
async def test_bad_requests_are_400(
    harness: Harness,
    client: openai.AsyncOpenAI,
    path: str,
    body: bytes | dict[str, Any],
    param: str | None,
    needle: str,
) -> None:
    await harness.add(FakeWorker(tiny_card()))
    status, payload = await post(harness, path, body)
    assert status == 400
    err = assert_openai_error(payload)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert needle in err["message"]
    await still_serving(client)


async def test_unknown_model_is_404(harness: Harness, client: openai.AsyncOpenAI) -> None:
    await harness.add(FakeWorker(tiny_card()))
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    err = assert_openai_error(info.value.response.json())
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "`nope`" in err["message"]
    await still_serving(client)


async def test_prompt_too_long_is_400_context_length_exceeded(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    await harness.add(FakeWorker(tiny_card(context_length=32)))
    with pytest.raises(openai.BadRequestError) as info:
        await client.completions.create(model=MODEL, prompt="word " * 100, max_tokens=4)
    err = assert_openai_error(info.value.response.json())
    assert err["code"] == "context_length_exceeded"
    assert "maximum context length is 32 tokens" in err["message"]
    with pytest.raises(openai.BadRequestError) as info:
        await client.completions.create(model=MODEL, prompt="hi", max_tokens=100)
    err = assert_openai_error(info.value.response.json())
    assert err["code"] == "context_length_exceeded" and err["param"] == "max_tokens"
    await still_serving(client)


async def test_a_prompt_encoded_in_an_encoder_thread_fails_as_one_encoded_inline(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    """Long prompts are encoded off the event loop; their errors are the same OpenAI errors."""
    await harness.add(FakeWorker(tiny_card(context_length=64)))
    long = "word " * INLINE_ENCODE_CHARS  # far past the inline threshold and the context
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            await client.completions.create(model=MODEL, prompt=long, max_tokens=4, stream=stream)
        err = assert_openai_error(info.value.response.json())
        assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": long}], stream=stream
            )
        err = assert_openai_error(info.value.response.json())
        assert err["code"] == "context_length_exceeded"
        assert "maximum context length is 64 tokens" in err["message"]
    await still_serving(client)


async def test_known_model_without_ready_worker_is_503(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    starting = FakeWorker(tiny_card())
    starting.alive = False  # its card is registered, its endpoint is not reachable yet
    await harness.add(starting)
    assert [m.id async for m in client.models.list()] == [MODEL]
    status, payload = await post(harness, COMPLETIONS, {"model": MODEL, "prompt": "x"})
    assert status == 503
    assert assert_openai_error(payload)["code"] == "service_unavailable"


async def test_unknown_path_and_method_are_openai_errors(harness: Harness) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(harness.url + "/v1/nothing") as r:
            assert r.status == 404
            assert_openai_error(await r.json())
        async with s.get(harness.url + CHAT) as r:
            assert r.status == 405
            assert_openai_error(await r.json())


async def test_worker_error_before_first_token_is_http_error(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    await harness.add(FakeWorker(tiny_card(), error_after_tokens=0))
    with pytest.raises(openai.InternalServerError) as info:
        await client.completions.create(model=MODEL, prompt="x", max_tokens=4, stream=True)
    err = assert_openai_error(info.value.response.json())
    assert "engine exploded" in err["message"]


async def test_worker_error_mid_stream_is_an_error_event_then_done(harness: Harness) -> None:
    await harness.add(FakeWorker(tiny_card(), error_after_tokens=2))
    async with aiohttp.ClientSession() as s:
        body = {"model": MODEL, "prompt": "a b c", "max_tokens": 8, "stream": True}
        async with s.post(harness.url + COMPLETIONS, json=body) as r:
            assert r.status == 200
            raw = (await r.read()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2] and "engine exploded" in events[-2]
    assert len(events) == 4  # two tokens, the error, [DONE]
    assert (
        harness.metric(
            "dynamo_frontend_requests_total",
            model=MODEL,
            endpoint="completions",
            request_type="stream",
            status="error",
            error_type="internal",
        )
        == 1
    )


async def test_openai_client_raises_on_in_band_error(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    await harness.add(FakeWorker(tiny_card(), error_after_tokens=1))
    stream = await client.completions.create(model=MODEL, prompt="x", max_tokens=8, stream=True)
    with pytest.raises(openai.APIError, match="engine exploded"):
        async for _ in stream:
            pass
