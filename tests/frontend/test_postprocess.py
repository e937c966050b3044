"""A choice's steps through the card's parsers: finish reasons, rendering, which requests parse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dynamo.frontend.generation import Step
from dynamo.frontend.postprocess import choice_parser, deltas, message
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from dynamo.protocols.model_card import ModelCard

CALL = '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'
TOOLS = [{"type": "function", "function": {"name": "f"}}]


def card(**parsers: str) -> ModelCard:
    return ModelCard(name="m", **parsers)  # type: ignore[arg-type]


def chat(**body: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return parse_body(ChatCompletionRequest, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("text", "engine_finish", "finish"),
    [(CALL, "stop", "tool_calls"), (CALL, "length", "length"), ("plain", "stop", "stop")],
)
def test_finish_reason(text: str, engine_finish: str, finish: str) -> None:
    parser = choice_parser(card(tool_call_parser="hermes"), chat(tools=TOOLS))
    assert parser is not None
    assert parser.step(Step(text, None, engine_finish)).finish == finish


def test_which_requests_parse() -> None:
    both = card(tool_call_parser="hermes", reasoning_parser="deepseek_r1")
    completion = parse_body(CompletionRequest, b'{"model": "m", "prompt": "x"}')
    assert choice_parser(both, completion) is None
    assert choice_parser(card(), chat(tools=TOOLS)) is None
    assert choice_parser(card(tool_call_parser="hermes"), chat()) is None  # no tools
    assert (
        choice_parser(card(tool_call_parser="hermes"), chat(tools=TOOLS, tool_choice="none"))
        is None
    )
    only_reasoning = choice_parser(both, chat(tools=TOOLS, tool_choice="none"))
    assert only_reasoning is not None
    step = only_reasoning.step(Step("a</think>" + CALL, None, "stop"))
    assert (step.reasoning, step.content, step.finish) == ("a", CALL, "stop")


def test_a_parser_name_this_frontend_does_not_know_serves_the_text_unparsed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert choice_parser(card(tool_call_parser="future_family"), chat(tools=TOOLS)) is None
    assert "future_family" in caplog.text


def test_message_and_deltas_rendering() -> None:
    parser = choice_parser(card(tool_call_parser="hermes"), chat(tools=TOOLS))
    assert parser is not None
    step = parser.step(Step(CALL, None, "stop"))
    msg = message("", "why", parser.calls, "reasoning")
    assert msg["content"] is None and msg["reasoning"] == "why"
    assert msg["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    first, second = deltas(step, "reasoning_content")
    call_id = parser.calls[0].id
    assert first == {
        "tool_calls": [
            {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            }
        ]
    }
    assert second == {"tool_calls": [{"index": 0, "function": {"arguments": '{"x": 1}'}}]}
    assert message("hi", "", [], "reasoning_content") == {"role": "assistant", "content": "hi"}
