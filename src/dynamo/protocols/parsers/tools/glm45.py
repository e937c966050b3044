"""GLM-4.5 / 4.6: `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>...
</tool_call>`. A value that is JSON is taken as JSON, anything else as a string."""

from __future__ import annotations

import json
import re

from dynamo.protocols.parsers.base import MalformedToolCall, ParsedCall, loose_value
from dynamo.protocols.parsers.tool_engine import Block, ToolFormat

_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


def parse(body: str) -> list[ParsedCall]:
    name, _, rest = body.strip().partition("\n")
    if not name.strip() or "<" in name:
        raise MalformedToolCall("expected the function name on the first line")
    args = {m.group(1).strip(): loose_value(m.group(2)) for m in _PAIR.finditer(rest)}
    if _PAIR.sub("", rest).strip():
        raise MalformedToolCall("unexpected text between arguments")
    return [ParsedCall(name.strip(), json.dumps(args, ensure_ascii=False))]


FORMAT = ToolFormat("glm45", (Block("<tool_call>", "</tool_call>"),), parse)
