"""Llama 3.1/3.2 JSON tool calls: `<|python_tag|>` (or a bare `{` opening the output), then
`{"name": ..., "parameters": {...}}` objects separated by `;`."""

from __future__ import annotations

from dynamo.protocols.parsers.base import ParsedCall, call_from_object, json_values
from dynamo.protocols.parsers.tool_engine import Block, ToolFormat


def parse(body: str) -> list[ParsedCall]:
    return [call_from_object(v) for v in json_values(body)]


FORMAT = ToolFormat(
    "llama3_json",
    (Block("<|python_tag|>", None), Block("{", None, at_start=True, keep_start=True)),
    parse,
)
