"""Mistral: `[TOOL_CALLS]` then either a JSON array of `{"name", "arguments"}` objects (v3
tokenizer) or `name[ARGS]{...}` (v11+), optionally `name[CALL_ID]id[ARGS]{...}`, repeated
after further `[TOOL_CALLS]` markers."""

from __future__ import annotations

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ParsedCall,
    arguments_json,
    call_from_object,
    json_values,
)
from dynamo.protocols.parsers.tool_engine import Block, ToolFormat

MARKER = "[TOOL_CALLS]"


def parse(body: str) -> list[ParsedCall]:
    calls: list[ParsedCall] = []
    for part in body.split(MARKER):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):
            for value in json_values(part):
                items = value if isinstance(value, list) else [value]
                calls.extend(call_from_object(item) for item in items)
            continue
        name, sep, args = part.partition("[ARGS]")
        if not sep:
            raise MalformedToolCall("expected name[ARGS]{...} after [TOOL_CALLS]")
        name, _, call_id = name.partition("[CALL_ID]")
        values = json_values(args, " \t\r\n")
        if not name.strip() or len(values) != 1:
            raise MalformedToolCall("expected one JSON object after [ARGS]")
        calls.append(ParsedCall(name.strip(), arguments_json(values[0]), call_id.strip() or None))
    return calls


FORMAT = ToolFormat("mistral", (Block(MARKER, None),), parse)
