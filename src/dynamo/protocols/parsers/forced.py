"""Parsers for output constrained to tool calls (`tool_choice` required or named, enforced by
the engine's guided decoding): the output is JSON, not a family's markup.

Named: the whole output is the arguments object of the one function; it streams as written
(id and name first, then the object's text as it arrives). Required: the output is a JSON
array of `{"name": ..., "parameters": {...}}`; its calls are sent when the output ends.
Output that is not what the constraint promised (cut off by `max_tokens`) comes back as
content; a named call whose arguments had begun keeps what was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ToolCall,
    ToolCallDelta,
    ToolParseDelta,
    arguments_json,
    new_call_id,
)
from dynamo.protocols.parsers.json_scan import ObjectScanner


class NamedCallParser:
    """`ToolCallParser` for output that is the arguments object of function `name`."""

    def __init__(self, name: str, make_id: Callable[[], str] = new_call_id) -> None:
        self._name = name
        self._make_id = make_id
        self._text = ""  # the output from the object's `{`
        self._lead = ""  # whitespace before it
        self._id: str | None = None
        self._scanner = ObjectScanner()
        self._sent = 0
        self._calls: list[ToolCall] = []
        self._finished = False

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, text: str) -> ToolParseDelta:
        out = ToolParseDelta()
        if self._id is None:
            self._lead += text
            stripped = self._lead.lstrip()
            if not stripped.startswith("{"):
                return out  # not begun (or not an object: content at the end)
            self._id, self._text, self._lead = self._make_id(), stripped, ""
            out.tool_calls.append(ToolCallDelta(0, self._id, self._name, ""))
        else:
            self._text += text
        self._send(out)
        return out

    def finish(self) -> ToolParseDelta:
        out = ToolParseDelta()
        if self._finished:
            return out
        self._finished = True
        if self._id is None:
            out.content = self._lead
            return out
        self._send(out)
        self._calls.append(ToolCall(self._id, self._name, self._text[: self._sent]))
        return out

    def _send(self, out: ToolParseDelta) -> None:
        end = self._scanner.scan(self._text)
        upto = len(self._text) if end is None else end
        if upto > self._sent:
            out.tool_calls.append(ToolCallDelta(0, arguments=self._text[self._sent : upto]))
            self._sent = upto


class RequiredCallsParser:
    """`ToolCallParser` for output that is a JSON array of `{"name", "parameters"}` calls."""

    def __init__(self, make_id: Callable[[], str] = new_call_id) -> None:
        self._make_id = make_id
        self._text = ""
        self._calls: list[ToolCall] = []
        self._finished = False

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, text: str) -> ToolParseDelta:
        self._text += text
        return ToolParseDelta()

    def finish(self) -> ToolParseDelta:
        out = ToolParseDelta()
        if self._finished:
            return out
        self._finished = True
        try:
            calls = _array_of_calls(self._text)
        except MalformedToolCall:
            out.content = self._text
            return out
        for index, (name, arguments) in enumerate(calls):
            call = ToolCall(self._make_id(), name, arguments)
            self._calls.append(call)
            out.tool_calls.append(ToolCallDelta(index, call.id, name, ""))
            out.tool_calls.append(ToolCallDelta(index, arguments=arguments))
        return out


def _array_of_calls(text: str) -> list[tuple[str, str]]:
    try:
        value = json.loads(text)
    except ValueError:
        raise MalformedToolCall("not a JSON array of calls") from None
    if not isinstance(value, list) or not value:
        raise MalformedToolCall("not a JSON array of calls")
    calls = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedToolCall("a call needs a string `name`")
        calls.append((item["name"], arguments_json(item.get("parameters", {}))))
    return calls
