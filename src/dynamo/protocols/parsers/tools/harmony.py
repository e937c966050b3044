"""gpt-oss (harmony): a call is a commentary message addressed to a function,
`<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>` or
`<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>{...}<|call|>`
(`<|start|>assistant` is dropped elsewhere; `<|call|>` may be stripped as a stop token). Pair it
with the `gpt_oss` reasoning parser, which takes the analysis channel out first."""

from __future__ import annotations

import re

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ParsedCall,
    arguments_json,
    json_values,
)
from dynamo.protocols.parsers.tool_engine import Block, Head, ToolFormat

_HEADER = re.compile(r"^(?:functions\.)?([\w.\-]+)(?:[\s<].*)?$", re.S)


def parse(body: str) -> list[ParsedCall]:
    header, sep, args = body.partition("<|message|>")
    match = _HEADER.match(header.strip())
    if not sep or not match:
        raise MalformedToolCall("expected to=functions.NAME ...<|message|>{...}")
    values = json_values(args.removesuffix("<|end|>"), " \t\r\n")
    if len(values) != 1:
        raise MalformedToolCall("expected one JSON object of arguments")
    return [ParsedCall(match.group(1), arguments_json(values[0]))]


def head(body: str) -> Head | None:
    header, sep, _ = body.partition("<|message|>")
    match = _HEADER.match(header.strip())
    if not sep or not match:
        return None
    return Head(match.group(1), None, len(header) + len(sep))


FORMAT = ToolFormat(
    "harmony",
    (
        Block("<|channel|>commentary to=", "<|call|>"),
        Block("<|start|>assistant to=", "<|call|>"),  # the recipient in the role header
    ),
    parse,
    drop=("<|start|>assistant",),
    head=head,
)
