"""Hermes / Qwen2.5 / Qwen3: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one
JSON object per block, any number of blocks."""

from __future__ import annotations

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ParsedCall,
    call_from_object,
    json_values,
)
from dynamo.protocols.parsers.tool_engine import Block, ToolFormat


def parse(body: str) -> list[ParsedCall]:
    values = json_values(body, " \t\r\n")
    if len(values) != 1:
        raise MalformedToolCall("a <tool_call> block holds exactly one JSON object")
    return [call_from_object(values[0])]


FORMAT = ToolFormat("hermes", (Block("<tool_call>", "</tool_call>"),), parse)
