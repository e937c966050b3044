"""`response_format` and `guided_*`: what reaches the engine, and the 400s on the way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from dynamo.runtime.errors import InvalidRequestError

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def chat(**body: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return parse_body(ChatCompletionRequest, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("body", "guided", "param"),
    [
        ({}, None, "response_format"),
        ({"response_format": {"type": "text"}}, None, "response_format"),
        ({"response_format": {"type": "json_object"}}, {"json_object": True}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "c", "schema": SCHEMA},
                }
            },
            {"json": SCHEMA},
            "response_format",
        ),
        ({"guided_json": SCHEMA}, {"json": SCHEMA}, "guided_json"),
        ({"guided_regex": "[0-9]+"}, {"regex": "[0-9]+"}, "guided_regex"),
        ({"guided_choice": ["yes", "no"]}, {"choice": ["yes", "no"]}, "guided_choice"),
        ({"guided_grammar": "root ::= 'a'"}, {"grammar": "root ::= 'a'"}, "guided_grammar"),
    ],
)
def test_what_the_engine_is_asked_for(
    body: dict[str, Any], guided: dict[str, Any] | None, param: str
) -> None:
    req = chat(**body)
    assert req.guided_decoding() == guided
    assert req.guided_param() == param


def test_completions_take_guided_fields_too() -> None:
    body = {"model": "m", "prompt": "x", "guided_choice": ["a", "b"]}
    req = parse_body(CompletionRequest, json.dumps(body).encode())
    assert req.guided_decoding() == {"choice": ["a", "b"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"response_format": {"type": "json_object"}, "guided_regex": "a"},
            "response_format: only one of guided_regex, response_format may constrain",
        ),
        ({"response_format": {"type": "json_schema"}}, "type json_schema needs json_schema"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"guided_choice": []}, "guided_choice"),
    ],
)
def test_bad_constraints_are_400s(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat(**body)
    assert message in str(info.value)
