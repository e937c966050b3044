"""Parsers of output constrained to tool calls (tool_choice named / required)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.protocols.parsers.base import ToolCallDelta, ToolParseDelta
from dynamo.protocols.parsers.forced import NamedCallParser, RequiredCallsParser

ARGS = '{"city": "Paris", "note": "a } in a string \\" and ☕", "days": [1, {"x": 2}]}'


def deltas(parser: NamedCallParser | RequiredCallsParser, chunks: list[str]) -> ToolParseDelta:
    out = ToolParseDelta()
    for d in [parser.feed(c) for c in chunks] + [parser.finish()]:
        out.content += d.content
        out.tool_calls += d.tool_calls
    return out


def args_of(pieces: list[ToolCallDelta]) -> str:
    return "".join(p.arguments for p in pieces)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ARGS) + 2), max_size=10))
def test_named_arguments_stream_and_add_up_for_any_chunking(cuts: list[int]) -> None:
    text = "\n " + ARGS + "\n"
    points = sorted(set(cuts))
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    parser = NamedCallParser("get_weather", make_id=lambda: "call_x")
    out = deltas(parser, chunks)
    assert out.content == ""
    assert (out.tool_calls[0].id, out.tool_calls[0].name) == ("call_x", "get_weather")
    assert args_of(out.tool_calls) == ARGS == parser.tool_calls[0].arguments


def test_named_arguments_are_sent_before_the_output_ends() -> None:
    parser = NamedCallParser("f")
    first = parser.feed('{"a": "lo')
    assert [(d.name, d.arguments) for d in first.tool_calls] == [("f", ""), (None, '{"a": "lo')]
    assert parser.feed('ng"}').tool_calls[0].arguments == 'ng"}'


def test_named_output_that_is_not_an_object_is_content() -> None:
    parser = NamedCallParser("f")
    out = deltas(parser, ["I cannot ", "do that."])
    assert (out.content, out.tool_calls, parser.tool_calls) == ("I cannot do that.", [], [])


def test_required_array_becomes_calls() -> None:
    text = json.dumps(
        [{"name": "a", "parameters": {"x": "☕"}}, {"name": "b", "parameters": {}}],
        ensure_ascii=False,
    )
    parser = RequiredCallsParser()
    out = deltas(parser, [text[:9], text[9:]])
    assert [(c.name, json.loads(c.arguments)) for c in parser.tool_calls] == [
        ("a", {"x": "☕"}),
        ("b", {}),
    ]
    assert [d.index for d in out.tool_calls] == [0, 0, 1, 1]
    assert out.content == ""


def test_required_output_cut_off_is_content() -> None:
    out = deltas(RequiredCallsParser(), ['[{"name": "a", "param'])
    assert (out.content, out.tool_calls) == ('[{"name": "a", "param', [])
