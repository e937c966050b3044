"""DeepSeek V3 / R1-0528 and V3.1 calls, wrapped in a tool-calls begin ... end section.

The markers use a fullwidth bar and the "lower one eighth block" (written with escapes here):
V3:   `<|tool_call_begin|>function<|tool_sep|>NAME\\n```json\\n{...}\\n```<|tool_call_end|>`
V3.1: `<|tool_call_begin|>NAME<|tool_sep|>{...}<|tool_call_end|>`
"""

from __future__ import annotations

import re

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ParsedCall,
    arguments_json,
    json_values,
)
from dynamo.protocols.parsers.tool_engine import Block, Head, ToolFormat


def marker(words: str) -> str:
    """DeepSeek's spelling of `<|tool calls begin|>`: U+FF5C bars, U+2581 for spaces."""
    return "<\uff5c" + words.replace(" ", "\u2581") + "\uff5c>"


CALLS_BEGIN, CALLS_END = marker("tool calls begin"), marker("tool calls end")
CALL_BEGIN, CALL_END = marker("tool call begin"), marker("tool call end")
SEP = marker("tool sep")
_V3_HEAD = re.compile(r"\s*function" + re.escape(SEP) + r"([^\n]+)\n```(?:json)?\n")
_V3_1_HEAD = re.compile(r"([^<]+?)" + re.escape(SEP))
_V3 = re.compile(r"^\s*function" + re.escape(SEP) + r"([^\n]+)\n```(?:json)?\n(.*)\n```\s*$", re.S)


def _one_object(text: str) -> str:
    values = json_values(text, " \t\r\n")
    if len(values) != 1:
        raise MalformedToolCall("expected one JSON object of arguments")
    return arguments_json(values[0])


def parse_v3(body: str) -> list[ParsedCall]:
    match = _V3.match(body)
    if not match:
        raise MalformedToolCall("expected function<tool_sep>NAME and a ```json block")
    return [ParsedCall(match.group(1).strip(), _one_object(match.group(2)))]


def parse_v3_1(body: str) -> list[ParsedCall]:
    name, sep, args = body.partition(SEP)
    if not sep or not name.strip():
        raise MalformedToolCall("expected NAME<tool_sep>{...}")
    return [ParsedCall(name.strip(), _one_object(args))]


def head_v3(body: str) -> Head | None:
    match = _V3_HEAD.match(body)
    return Head(match.group(1).strip(), None, match.end()) if match else None


def head_v3_1(body: str) -> Head | None:
    match = _V3_1_HEAD.match(body)
    if not match or not match.group(1).strip():
        return None
    return Head(match.group(1).strip(), None, match.end())


_BLOCKS = (Block(CALL_BEGIN, CALL_END),)
V3 = ToolFormat("deepseek_v3", _BLOCKS, parse_v3, (CALLS_BEGIN, CALLS_END), head_v3)
V3_1 = ToolFormat("deepseek_v3_1", _BLOCKS, parse_v3_1, (CALLS_BEGIN, CALLS_END), head_v3_1)
