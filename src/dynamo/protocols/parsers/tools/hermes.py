"""Hermes / Qwen2.5 / Qwen3: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one
JSON object per block, any number of blocks."""

from __future__ import annotations

import json
import re

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ParsedCall,
    call_from_object,
    json_values,
)
from dynamo.protocols.parsers.tool_engine import Block, Head, ToolFormat

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:')


def parse(body: str) -> list[ParsedCall]:
    values = json_values(body, " \t\r\n")
    if len(values) != 1:
        raise MalformedToolCall("a <tool_call> block holds exactly one JSON object")
    return [call_from_object(values[0])]


def head(body: str) -> Head | None:
    """`{"name": "f", "arguments": ` with the name first (the order the template asks for)."""
    match = _HEAD.match(body)
    if not match:
        return None
    name = json.loads(match.group(1))
    return Head(name, None, match.end()) if name else None


FORMAT = ToolFormat("hermes", (Block("<tool_call>", "</tool_call>"),), parse, head=head)
