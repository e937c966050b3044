"""`tools`, `tool_choice` and the agent loop's messages: validation and chat-template rendering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dynamo.frontend.preprocess import Preprocessor
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.protocol import ChatCompletionRequest, parse_body
from dynamo.runtime.errors import InvalidRequestError
from dynamo.testing.frontend_harness import tiny_card
from dynamo.testing.tool_model import hermes_tiny_model

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
LOOP = [
    {"role": "user", "content": "Weather in 東京?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "東京"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
]


@pytest.fixture
async def pre(tmp_path: Path) -> AsyncIterator[Preprocessor]:
    cache = PreprocessorCache(encode_threads=1)
    model = hermes_tiny_model(tmp_path / "model")
    yield await cache.get(tiny_card(source_path=str(model), context_length=10_000))
    await cache.close()


def chat(**body: Any) -> ChatCompletionRequest:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_body(ChatCompletionRequest, json.dumps({"model": "m", **body}).encode())


def test_the_agent_loop_renders_tools_past_calls_and_results(pre: Preprocessor) -> None:
    text = pre.chat_prompt_text(chat(messages=LOOP, tools=[WEATHER, TIME]))
    assert json.dumps(WEATHER, ensure_ascii=False) in text
    assert '"name": "get_time"' in text
    # arguments reach the template as a mapping: written once as JSON, not as a quoted string
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call>' in text
    )
    assert '<tool_response>\n{"temp_c": 21}\n</tool_response>' in text
    assert text.endswith("<|im_start|>assistant\n")


def test_tool_choice_none_hides_the_tools(pre: Preprocessor) -> None:
    req = chat(tools=[WEATHER], tool_choice="none")
    assert "<tools>" not in pre.chat_prompt_text(req)
    assert not req.parses_tool_calls()


def test_a_named_choice_shows_only_that_tool(pre: Preprocessor) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    text = pre.chat_prompt_text(chat(tools=[WEATHER, TIME], tool_choice=choice))
    assert '"name": "get_time"' in text and "get_weather" not in text


@pytest.mark.parametrize("choice", ["auto", "required", None])
def test_auto_and_required_show_every_tool(pre: Preprocessor, choice: str | None) -> None:
    req = chat(tools=[WEATHER, TIME], tool_choice=choice)
    text = pre.chat_prompt_text(req)
    assert "get_weather" in text and "get_time" in text
    assert req.parses_tool_calls()


def test_arguments_that_are_not_json_reach_the_template_as_sent(pre: Preprocessor) -> None:
    messages = [dict(m) for m in LOOP]
    messages[1] = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
        ],
    }
    assert '"arguments": "{oops"' in pre.chat_prompt_text(chat(messages=messages))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tool_choice": "required"}, "tool_choice: needs tools to choose from"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice: function 'x' is not among the tools",
        ),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools: function names must be unique"),
        ({"tools": [{"function": {"name": "f"}}]}, "tools.0.type: Field required"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools.0.function.name"),
        (
            {"messages": [{"role": "tool", "content": "21"}]},
            "messages.0: a tool message needs the tool_call_id it answers",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "messages.0: only assistant messages carry tool_calls",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]},
            "messages.0.tool_calls.0.function.name: Field required",
        ),
    ],
)
def test_bad_tool_requests_are_400s_naming_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat(**body)
    assert message in str(info.value)
