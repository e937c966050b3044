"""tool_choice "required" / named: the JSON schema for engines that constrain their output,
the parser of that output, and the check of an unconstrained engine's answer."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from tokenizers import Tokenizer

from dynamo.frontend import tool_choice as tc
from dynamo.frontend.errors import ToolChoiceNotHonouredError, to_http_error
from dynamo.frontend.protocol import ChatCompletionRequest, parse_body
from dynamo.protocols.model_card import ModelCard
from dynamo.protocols.parsers.base import ToolCall
from dynamo.runtime.errors import InvalidRequestError
from dynamo.testing.fake_worker import FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, tiny_card

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "now"}},
]


def chat(**body: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, **body}
    return parse_body(ChatCompletionRequest, json.dumps(body).encode())


NAMED = {"type": "function", "function": {"name": "get_weather"}}


def test_a_named_choice_constrains_the_output_to_its_arguments() -> None:
    schema = tc.call_schema(chat(tool_choice=NAMED))
    assert schema == WEATHER
    jsonschema.validate({"city": "Paris"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"town": "Paris"}, schema)


def test_required_constrains_the_output_to_an_array_of_known_calls() -> None:
    schema = tc.call_schema(chat(tool_choice="required"))
    ok = [
        {"name": "get_weather", "parameters": {"city": "Paris"}},
        {"name": "now", "parameters": {}},
    ]
    jsonschema.validate(ok, schema)
    for bad in ([], [{"name": "other", "parameters": {}}], [{"name": "get_weather"}], {"a": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_parallel_tool_calls_false_allows_one_call() -> None:
    schema = tc.call_schema(chat(tool_choice="required", parallel_tool_calls=False))
    one = [{"name": "now", "parameters": {}}]
    jsonschema.validate(one, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(one * 2, schema)


def test_shared_defs_are_merged_and_conflicting_ones_refused() -> None:
    def tool(name: str, unit: Any) -> dict[str, Any]:
        params = {"type": "object", "properties": {"u": {"$ref": "#/$defs/unit"}}}
        return {
            "type": "function",
            "function": {"name": name, "parameters": {**params, "$defs": {"unit": unit}}},
        }

    same = chat(
        tools=[tool("a", {"enum": ["c"]}), tool("b", {"enum": ["c"]})], tool_choice="required"
    )
    schema = tc.call_schema(same)
    assert schema["$defs"] == {"unit": {"enum": ["c"]}}
    jsonschema.validate([{"name": "a", "parameters": {"u": "c"}}], schema)
    clash = chat(
        tools=[tool("a", {"enum": ["c"]}), tool("b", {"enum": ["f"]})], tool_choice="required"
    )
    with pytest.raises(InvalidRequestError, match=r"\$defs"):
        tc.call_schema(clash)


def test_the_constraint_goes_only_to_engines_that_honour_it() -> None:
    vllm = ModelCard(name="m", structured_output=True)
    mocker = ModelCard(name="m", tool_call_parser="hermes")
    req = chat(tool_choice="required")
    assert tc.check_card(req, vllm) == {"json": tc.call_schema(req)}
    assert tc.check_card(req, mocker) is None  # asked, then checked
    assert tc.check_card(chat(tool_choice="auto"), vllm) is None
    with pytest.raises(InvalidRequestError, match="--dyn-tool-call-parser"):
        tc.check_card(req, ModelCard(name="m"))
    both = chat(tool_choice=NAMED, response_format={"type": "json_object"})
    with pytest.raises(InvalidRequestError, match="response_format"):
        tc.check_card(both, vllm)


def test_an_unconstrained_answer_without_the_call_is_a_model_error() -> None:
    weather = [ToolCall("call_1", "get_weather", '{"city": "Paris"}')]
    tc.check_calls(chat(tool_choice="required"), weather)
    tc.check_calls(chat(tool_choice=NAMED), weather)
    with pytest.raises(ToolChoiceNotHonouredError, match="required"):
        tc.check_calls(chat(tool_choice="required"), [])
    with pytest.raises(ToolChoiceNotHonouredError, match="get_weather"):
        tc.check_calls(chat(tool_choice=NAMED), [ToolCall("call_2", "now", "{}")])
    err = to_http_error(ToolChoiceNotHonouredError("no call"))
    assert (err.status, err.type, err.param) == (500, "model_error", "tool_choice")


async def test_a_structured_output_worker_gets_the_schema_and_its_output_becomes_the_call(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    # The worker "obeys" the constraint: it is scripted to write the arguments object.
    args = '{"city": "Paris", "note": "a long enough note to arrive in many pieces"}'
    script = tokenizer.encode(args, add_special_tokens=False).ids
    card = tiny_card(structured_output=True)
    worker = await harness.add(FakeWorker(card, script=script, final_finish="stop"))
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice=NAMED,  # type: ignore[arg-type]
        max_tokens=len(script),
        stream=True,
    )
    pieces, finish = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    sent = worker.requests[0]["sampling_options"]["guided_decoding"]
    assert sent == {"json": WEATHER}
    assert pieces[0].function is not None and pieces[0].function.name == "get_weather"
    fragments = [p.function.arguments for p in pieces[1:] if p.function]
    assert len(fragments) > 1 and "".join(fragments) == args  # type: ignore[arg-type]
    assert finish == "tool_calls"
