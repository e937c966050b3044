"""What the output parsers return: content, reasoning and tool-call pieces of a model's text.

Parsers are incremental: `feed(text_delta)` returns what can be said for sure so far, and
`finish()` flushes what was held back (a partial marker, an unterminated block). Concatenating
every returned piece gives the same result whatever the chunking of the text.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


class MalformedToolCall(ValueError):
    """A tool-call block that does not parse; the parser returns its text as content."""


@dataclass(frozen=True)
class ToolCall:
    """One complete call: `arguments` is the JSON text of an object, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A streamed piece of call number `index`: id and name come first, then arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolParseDelta:
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


@dataclass
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""


@dataclass(frozen=True)
class ParsedCall:
    """What a family's body parser found: name, JSON arguments and the model's own id."""

    name: str
    arguments: str
    id: str | None = None


class ToolCallParser(Protocol):
    def feed(self, text: str) -> ToolParseDelta: ...

    def finish(self) -> ToolParseDelta: ...

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every call parsed so far, in order."""


class ReasoningParser(Protocol):
    def feed(self, text: str) -> ReasoningDelta: ...

    def finish(self) -> ReasoningDelta: ...


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def arguments_json(value: Any) -> str:
    """Arguments as the JSON text of an object; a JSON string holding an object is accepted."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise MalformedToolCall(f"arguments are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedToolCall("arguments must be a JSON object")
    return json.dumps(value, ensure_ascii=False)


def call_from_object(obj: Any) -> ParsedCall:
    """`{"name": ..., "arguments"|"parameters": {...}}`, the shape most JSON formats use."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        raise MalformedToolCall("a tool call needs a non-empty string `name`")
    args = obj.get("arguments", obj.get("parameters", {}))
    call_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    return ParsedCall(obj["name"], arguments_json(args), call_id)


def json_values(text: str, separators: str = " \t\r\n;,") -> list[Any]:
    """Every JSON value in `text`, one after another, separated by `separators` only."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i] in separators:
            i += 1
        if i == len(text):
            return out
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise MalformedToolCall(f"not JSON: {exc}") from None
        out.append(value)


def loose_value(raw: str) -> Any:
    """A parameter value written as text (XML-ish formats): JSON if it is JSON, else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
