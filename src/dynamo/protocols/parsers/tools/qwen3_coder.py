"""Qwen3-Coder XML calls: `<tool_call><function=NAME><parameter=P>value</parameter>...
</function></tool_call>`. A value that is JSON (number, object, true) is taken as JSON,
anything else as a string (no tool schema is consulted)."""

from __future__ import annotations

import json
import re

from dynamo.protocols.parsers.base import MalformedToolCall, ParsedCall, loose_value
from dynamo.protocols.parsers.tool_engine import Block, ToolFormat

_FUNCTION = re.compile(r"^\s*<function=([^>\n]+)>(.*?)</function>\s*$", re.S)
_PARAM = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.S)


def _strip_one_newline(value: str) -> str:
    value = value.removeprefix("\n")
    return value.removesuffix("\n")


def parse(body: str) -> list[ParsedCall]:
    match = _FUNCTION.match(body)
    if not match:
        raise MalformedToolCall("expected <function=NAME>...</function>")
    name, inner = match.group(1).strip(), match.group(2)
    args = {}
    for p in _PARAM.finditer(inner):
        args[p.group(1).strip()] = loose_value(_strip_one_newline(p.group(2)))
    if _PARAM.sub("", inner).strip():
        raise MalformedToolCall("unexpected text between parameters")
    return [ParsedCall(name, json.dumps(args, ensure_ascii=False))]


FORMAT = ToolFormat("qwen3_coder", (Block("<tool_call>", "</tool_call>"),), parse)
