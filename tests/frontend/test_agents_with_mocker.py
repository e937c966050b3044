"""Issue #17's proof: the official openai client against `python -m dynamo.frontend` and
`python -m dynamo.mocker --canned-outputs` (real processes, a Hermes-layout chat template),
the worker started with `--dyn-tool-call-parser hermes --dyn-reasoning-parser deepseek_r1`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from dynamo.testing.processes import Procs, mocker_args, wait_for_instances
from dynamo.testing.tool_model import hermes_tiny_model

pytestmark = pytest.mark.slow

TOOL_OUTPUT = (
    "The user wants the weather; I should call get_weather.</think>\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
    '"options": {"unit": "celsius", "days": [1, 2]}, "note": "café ☕"}}\n</tool_call>'
)
ARGS = {"city": "Paris", "options": {"unit": "celsius", "days": [1, 2]}, "note": "café ☕"}
CANNED = [
    # first match wins: the tool result turn before the question it answers
    {"match": "<tool_response>", "text": "The tool says 21.</think>\n\nIt is 21 °C in Paris."},
    {"match": "Break it", "text": "Hmm.</think>\n\n<tool_call>{not json}</tool_call>"},
    {"match": "Just chat", "text": "Nothing to call.</think>\n\nHello there!"},
    {"match": '"name": "get_weather"', "text": TOOL_OUTPUT},
    {"match": "What is 2+2?", "text": "Two plus two is four.</think>\n\nThe answer is 4."},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
QUESTION: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
async def client(procs: Procs, tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    canned = tmp_path / "canned.jsonl"
    canned.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in CANNED))
    model = hermes_tiny_model(tmp_path / "model")
    url = await procs.frontend("--router-mode", "round-robin", "--enable-anthropic-api")
    args = mocker_args(
        "--canned-outputs",
        str(canned),
        "--dyn-tool-call-parser",
        "hermes",
        "--dyn-reasoning-parser",
        "deepseek_r1",
        model_name="agent",
    )
    args = tuple(str(model) if a == "dynamo:tinymodel" else a for a in args)
    procs.drain(await procs.spawn(*args))
    await wait_for_instances(url, 1)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as c:
        yield c


async def test_a_hermes_tool_call_comes_back_as_tool_calls(client: openai.AsyncOpenAI) -> None:
    chat = await client.chat.completions.create(
        model="agent", messages=QUESTION, tools=[WEATHER_TOOL], max_tokens=400
    )
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == ARGS  # type: ignore[union-attr]
    extra = choice.message.model_extra or {}
    assert extra["reasoning_content"] == "The user wants the weather; I should call get_weather."


async def test_a_streamed_tool_call_arrives_as_incremental_deltas(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="agent", messages=QUESTION, tools=[WEATHER_TOOL], max_tokens=400, stream=True
    )
    content, reasoning, finish = "", "", None
    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    async for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        for t in delta.tool_calls or []:
            if t.index not in calls:  # the first piece of a call carries its id and name
                assert t.id and t.function and t.function.name
                calls[t.index] = {"id": t.id, "name": t.function.name, "arguments": ""}
            else:
                assert t.id is None
                fragments += 1
            calls[t.index]["arguments"] += (t.function.arguments if t.function else "") or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert "<tool_call>" not in content and content.strip() == ""
    assert reasoning == "The user wants the weather; I should call get_weather."
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    assert json.loads(calls[0]["arguments"]) == ARGS
    assert fragments > 1  # the arguments came as the model wrote them, not in one piece
    unary = await client.chat.completions.create(
        model="agent", messages=QUESTION, tools=[WEATHER_TOOL], max_tokens=400
    )
    call = (unary.choices[0].message.tool_calls or [])[0]
    assert calls[0]["arguments"] == call.function.arguments  # type: ignore[union-attr]


async def test_the_agent_loop_turns_a_tool_result_into_an_answer(
    client: openai.AsyncOpenAI,
) -> None:
    first = await client.chat.completions.create(
        model="agent", messages=QUESTION, tools=[WEATHER_TOOL], max_tokens=400
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    messages: Any = [
        *QUESTION,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})},
    ]
    final = await client.chat.completions.create(
        model="agent", messages=messages, tools=[WEATHER_TOOL], max_tokens=400
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "\n\nIt is 21 °C in Paris."
    assert not final.choices[0].message.tool_calls


async def test_a_deepseek_r1_think_block_comes_back_as_reasoning(
    client: openai.AsyncOpenAI,
) -> None:
    q: Any = [{"role": "user", "content": "What is 2+2?"}]
    chat = await client.chat.completions.create(model="agent", messages=q, max_tokens=400)
    message = chat.choices[0].message
    assert (message.model_extra or {})["reasoning_content"] == "Two plus two is four."
    assert message.content == "\n\nThe answer is 4."
    assert chat.choices[0].finish_reason == "stop"


async def test_n_3_gives_three_choices_with_summed_usage(client: openai.AsyncOpenAI) -> None:
    q: Any = [{"role": "user", "content": "Tell me a story"}]  # no canned match: sampled tokens
    chat = await client.chat.completions.create(model="agent", messages=q, max_tokens=6, n=3)
    assert [c.index for c in chat.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in chat.choices)
    texts = [(c.message.model_extra or {}).get("reasoning_content") for c in chat.choices]
    assert len(set(texts)) == 3  # independent samples
    assert chat.usage is not None and chat.usage.completion_tokens == 18
    completion = await client.completions.create(
        model="agent", prompt="Once upon", max_tokens=4, n=3, echo=True
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.text.startswith("Once upon") for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens == 12


async def test_n_3_streams_three_interleaved_choices(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="agent",
        messages=QUESTION,
        tools=[WEATHER_TOOL],
        max_tokens=400,
        n=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    args: dict[int, str] = {0: "", 1: "", 2: ""}
    finishes: dict[int, str] = {}
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            for t in choice.delta.tool_calls or []:
                args[choice.index] += (t.function.arguments if t.function else "") or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "tool_calls", 1: "tool_calls", 2: "tool_calls"}
    assert all(json.loads(a) == ARGS for a in args.values())
    assert usage is not None and usage.completion_tokens > 0
    assert usage.completion_tokens % 3 == 0  # three identical canned answers


async def test_malformed_tool_markup_comes_back_as_content(client: openai.AsyncOpenAI) -> None:
    q: Any = [{"role": "user", "content": "Break it"}]
    for stream in (False, True):
        if not stream:
            chat = await client.chat.completions.create(
                model="agent", messages=q, tools=[WEATHER_TOOL], max_tokens=400
            )
            content, finish = chat.choices[0].message.content, chat.choices[0].finish_reason
            assert not chat.choices[0].message.tool_calls
        else:
            chunks = await client.chat.completions.create(
                model="agent", messages=q, tools=[WEATHER_TOOL], max_tokens=400, stream=True
            )
            content, finish = "", None
            async for chunk in chunks:
                if chunk.choices:
                    assert not chunk.choices[0].delta.tool_calls
                    content += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
        assert (content, finish) == ("\n\n<tool_call>{not json}</tool_call>", "stop")


async def test_response_format_is_a_clear_400_on_the_mocker(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="agent",
            messages=QUESTION,
            response_format={"type": "json_object"},
            max_tokens=5,
        )
    assert "response_format: the workers of model `agent` cannot constrain" in str(info.value)


RESPONSES_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def test_responses_api_tool_call_then_the_loop(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(
        model="agent", input="What is the weather in Paris?", tools=[RESPONSES_TOOL]
    )
    assert first.status == "completed"
    kinds = [item.type for item in first.output]
    assert kinds == ["reasoning", "function_call"]
    call = first.output[1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == ARGS
    assert first.usage is not None and first.usage.output_tokens > 0
    follow: Any = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'},
    ]
    final = await client.responses.create(model="agent", input=follow, tools=[RESPONSES_TOOL])
    assert final.output_text == "\n\nIt is 21 °C in Paris."


async def test_responses_api_streams_events(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="agent", input="What is the weather in Paris?", tools=[RESPONSES_TOOL], stream=True
    )
    kinds: list[str] = []
    args = ""
    done_args = None
    completed: Any = None
    async for ev in stream:
        kinds.append(ev.type)
        if ev.type == "response.function_call_arguments.delta":
            args += ev.delta
        elif ev.type == "response.function_call_arguments.done":
            done_args = ev.arguments
        elif ev.type == "response.completed":
            completed = ev.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds
    assert json.loads(args) == ARGS and done_args == args
    assert [item.type for item in completed.output] == ["reasoning", "function_call"]
    assert completed.usage.output_tokens > 0


async def test_responses_api_refuses_stored_state(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="responses are not stored"):
        await client.responses.create(model="agent", input="hi", previous_response_id="resp_1")


ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def post_messages(client: openai.AsyncOpenAI, body: dict[str, Any]) -> tuple[int, Any]:
    url = str(client.base_url).rstrip("/") + "/messages"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        if resp.content_type == "text/event-stream":
            events = []
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
            return resp.status, events
        return resp.status, await resp.json()


async def test_anthropic_messages_tool_use_thinking_and_the_loop(
    client: openai.AsyncOpenAI,
) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    body: dict[str, Any] = {
        "model": "agent",
        "max_tokens": 400,
        "messages": [question],
        "tools": [ANTHROPIC_TOOL],
    }
    status, msg = await post_messages(client, body)
    assert status == 200 and msg["type"] == "message" and msg["stop_reason"] == "tool_use"
    thinking, tool_use = msg["content"]
    assert thinking["thinking"] == "The user wants the weather; I should call get_weather."
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "get_weather"
    assert tool_use["input"] == ARGS
    assert msg["usage"]["input_tokens"] > 0 and msg["usage"]["output_tokens"] > 0
    body["messages"] = [
        question,
        {"role": "assistant", "content": [tool_use]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "21"}],
        },
    ]
    status, final = await post_messages(client, body)
    assert status == 200 and final["stop_reason"] == "end_turn"
    assert final["content"][-1] == {"type": "text", "text": "\n\nIt is 21 °C in Paris."}


async def test_anthropic_messages_stream(client: openai.AsyncOpenAI) -> None:
    body = {
        "model": "agent",
        "max_tokens": 400,
        "stream": True,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [ANTHROPIC_TOOL],
    }
    status, events = await post_messages(client, body)
    assert status == 200
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    partial = "".join(
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == ARGS
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_errors_have_anthropics_shape(client: openai.AsyncOpenAI) -> None:
    status, body = await post_messages(client, {"model": "agent", "messages": []})
    assert status == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


JUST_CHAT: Any = [{"role": "user", "content": "Just chat with me."}]


async def test_tool_choice_required_without_a_call_is_a_model_error(
    client: openai.AsyncOpenAI,
) -> None:
    # the mocker cannot constrain its output: the frontend checks the answer instead
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(
            model="agent",
            messages=JUST_CHAT,
            tools=[WEATHER_TOOL],
            tool_choice="required",
            max_tokens=400,
        )
    error = info.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["param"]) == ("model_error", "tool_choice")
    assert "without a tool call" in error["message"]


async def test_tool_choice_required_streamed_ends_with_an_error_event(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="agent",
        messages=JUST_CHAT,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=400,
        stream=True,
    )
    with pytest.raises(openai.APIError, match="without a tool call"):
        async for _ in stream:
            pass


async def test_tool_choice_named_is_answered_by_its_call(client: openai.AsyncOpenAI) -> None:
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    chat = await client.chat.completions.create(
        model="agent", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=named, max_tokens=400
    )
    assert chat.choices[0].finish_reason == "tool_calls"
    (call,) = chat.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    with pytest.raises(openai.InternalServerError, match="without calling `get_weather`"):
        await client.chat.completions.create(
            model="agent",
            messages=JUST_CHAT,
            tools=[WEATHER_TOOL],
            tool_choice=named,
            max_tokens=400,
        )
