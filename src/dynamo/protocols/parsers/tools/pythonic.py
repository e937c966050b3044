"""Pythonic calls (Llama 3.2/4, ToolACE): the output is a Python list of calls,
`[get_weather(city="Paris"), get_time()]`, optionally in `<|python_start|>...<|python_end|>`.
Arguments are keyword arguments with literal values."""

from __future__ import annotations

import ast
import json

from dynamo.protocols.parsers.base import MalformedToolCall, ParsedCall
from dynamo.protocols.parsers.tool_engine import Block, ToolFormat

_JSON_NAMES = {"true": True, "false": False, "null": None}


def _literal(node: ast.expr) -> object:
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    return ast.literal_eval(node)


def parse(body: str) -> list[ParsedCall]:
    try:
        tree = ast.parse(body.strip(), mode="eval").body
    except SyntaxError as exc:
        raise MalformedToolCall(f"not a Python list of calls: {exc.msg}") from None
    if not isinstance(tree, ast.List):
        raise MalformedToolCall("expected a list of calls")
    calls = []
    for node in tree.elts:
        if not isinstance(node, ast.Call) or node.args:
            raise MalformedToolCall("each element must be f(name=value, ...)")
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if isinstance(func, ast.Attribute):
            name = ast.unparse(func)
        if not name:
            raise MalformedToolCall("a call needs a function name")
        try:
            args = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
        except (ValueError, TypeError, SyntaxError) as exc:
            raise MalformedToolCall(f"argument is not a literal: {exc}") from None
        if len(args) != len(node.keywords):
            raise MalformedToolCall("**kwargs are not allowed")
        calls.append(ParsedCall(name, json.dumps(args, ensure_ascii=False)))
    return calls


FORMAT = ToolFormat(
    "pythonic",
    (
        Block("<|python_start|>", "<|python_end|>"),
        Block("[", None, at_start=True, keep_start=True),
    ),
    parse,
)
