"""Kimi K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX
<|tool_call_argument_begin|>{...}<|tool_call_end|>...<|tool_calls_section_end|>`; the model's
`functions.NAME:IDX` is the call id."""

from __future__ import annotations

import re

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ParsedCall,
    arguments_json,
    json_values,
)
from dynamo.protocols.parsers.tool_engine import Block, Head, ToolFormat

_ID = re.compile(r"^\s*((?:functions\.)?([\w.\-]+):\d+)\s*$")
ARG = "<|tool_call_argument_begin|>"


def parse(body: str) -> list[ParsedCall]:
    head, sep, args = body.partition(ARG)
    match = _ID.match(head)
    if not sep or not match:
        raise MalformedToolCall("expected functions.NAME:IDX<|tool_call_argument_begin|>{...}")
    values = json_values(args, " \t\r\n")
    if len(values) != 1:
        raise MalformedToolCall("expected one JSON object of arguments")
    return [ParsedCall(match.group(2), arguments_json(values[0]), match.group(1))]


def head(body: str) -> Head | None:
    header, sep, _ = body.partition(ARG)
    match = _ID.match(header)
    if not sep or not match:
        return None
    return Head(match.group(2), match.group(1), len(header) + len(ARG))


FORMAT = ToolFormat(
    "kimi_k2",
    (Block("<|tool_call_begin|>", "<|tool_call_end|>"),),
    parse,
    drop=("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"),
    head=head,
)
