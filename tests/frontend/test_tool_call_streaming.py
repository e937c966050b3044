"""Tool calls through the live frontend (hermes card, scripted worker): unary answers parse the
whole text; streams send a call's arguments as they are written and cannot take them back."""

from __future__ import annotations

from typing import Any

import openai
from tokenizers import Tokenizer

from dynamo.testing.fake_worker import FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, tiny_card

TOOLS: Any = [{"type": "function", "function": {"name": "get_weather"}}]
ASK: Any = [{"role": "user", "content": "Weather?"}]
WRITTEN = '{"city": "Paris",  "days": [1, 2]}'  # the model's own spacing is kept
GOOD = '<tool_call>{"name": "get_weather", "arguments": ' + WRITTEN + "}</tool_call>"
BAD = '<tool_call>{"name": "get_weather", "arguments": {"city": nope}}</tool_call>'


async def worker_writing(harness: Harness, tokenizer: Tokenizer, text: str) -> int:
    script = tokenizer.encode(text, add_special_tokens=False).ids
    card = tiny_card(tool_call_parser="hermes")
    await harness.add(FakeWorker(card, script=script, final_finish="stop"))
    return len(script)


async def streamed_calls(client: openai.AsyncOpenAI, n_tokens: int) -> tuple[str, list[Any]]:
    stream = await client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, max_tokens=n_tokens, stream=True
    )
    content, pieces = "", []
    async for chunk in stream:
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
            pieces += chunk.choices[0].delta.tool_calls or []
    return content, pieces


async def test_streamed_fragments_add_up_to_the_unary_arguments(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    n = await worker_writing(harness, tokenizer, GOOD)
    unary = await client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, max_tokens=n
    )
    (call,) = unary.choices[0].message.tool_calls or []
    assert call.function.arguments == WRITTEN  # type: ignore[union-attr]
    content, pieces = await streamed_calls(client, n)
    fragments = [p.function.arguments for p in pieces[1:]]
    assert content == "" and len(fragments) > 1 and "".join(fragments) == WRITTEN


async def test_malformed_arguments_are_content_unary_and_a_kept_call_streamed(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    n = await worker_writing(harness, tokenizer, BAD)
    unary = await client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, max_tokens=n
    )
    assert unary.choices[0].message.content == BAD
    assert not unary.choices[0].message.tool_calls
    assert unary.choices[0].finish_reason == "stop"
    content, pieces = await streamed_calls(client, n)
    assert pieces[0].function.name == "get_weather"
    assert "".join(p.function.arguments for p in pieces[1:]) == '{"city": nope}'
    assert "<tool_call>" not in content
