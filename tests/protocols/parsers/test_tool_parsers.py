"""Every tool-call family against its vectors, whole and split at every chunk boundary."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.protocols.parsers.vectors import VECTORS, Calls

from dynamo.protocols.parsers.base import ToolCall, ToolCallParser
from dynamo.protocols.parsers.registry import TOOL_FORMATS, tool_call_parser


def run(family: str, chunks: list[str]) -> tuple[str, list[ToolCall], list[dict[str, object]]]:
    """(content, final calls, the streamed tool-call deltas merged per index)."""
    counter = itertools.count()
    parser: ToolCallParser = tool_call_parser(family, make_id=lambda: f"id{next(counter)}")
    content = ""
    streamed: dict[int, dict[str, object]] = {}
    for d in [parser.feed(c) for c in chunks] + [parser.finish()]:
        content += d.content
        for t in d.tool_calls:
            entry = streamed.setdefault(t.index, {"arguments": ""})
            if t.id is not None:
                assert "id" not in entry, "id sent twice"
                entry["id"], entry["name"] = t.id, t.name
            else:
                assert "id" in entry, "arguments before the id and name"
            entry["arguments"] = str(entry["arguments"]) + t.arguments
    return content, parser.tool_calls, [streamed[i] for i in sorted(streamed)]


def _calls(calls: list[ToolCall]) -> Calls:
    return [(c.name, json.loads(c.arguments)) for c in calls]


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in itertools.pairwise([0, *points, len(text)])]


def test_every_family_has_vectors_with_several_calls_and_malformed_markup() -> None:
    for family in TOOL_FORMATS:
        mine = [v for v in VECTORS if v[0] == family]
        assert any(len(calls) >= 2 for _, _, _, calls in mine), family
        assert any(not calls and content for _, _, content, calls in mine), family


@pytest.mark.parametrize(("family", "text", "content", "calls"), VECTORS)
def test_vector_whole(family: str, text: str, content: str, calls: Calls) -> None:
    got_content, got_calls, streamed = run(family, [text])
    assert got_content == content
    assert _calls(got_calls) == calls
    assert streamed == [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in got_calls]


@pytest.mark.parametrize(("family", "text", "content", "calls"), VECTORS)
def test_vector_one_character_at_a_time(family: str, text: str, content: str, calls: Calls) -> None:
    got_content, got_calls, _ = run(family, list(text))
    assert got_content == content
    assert _calls(got_calls) == calls


@pytest.mark.parametrize(("family", "text", "content", "calls"), VECTORS)
def test_vector_split_in_two_at_every_boundary(
    family: str, text: str, content: str, calls: Calls
) -> None:
    for cut in range(len(text) + 1):
        got_content, got_calls, _ = run(family, [text[:cut], text[cut:]])
        assert (got_content, _calls(got_calls)) == (content, calls), cut


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VECTORS), st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_gives_the_whole_text_result(
    vector: tuple[str, str, str, Calls], cuts: list[int]
) -> None:
    family, text, content, calls = vector
    got_content, got_calls, streamed = run(family, split(text, cuts))
    assert got_content == content
    assert _calls(got_calls) == calls
    assert [json.loads(str(s["arguments"])) for s in streamed] == [a for _, a in calls]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(TOOL_FORMATS)),
    st.text(alphabet=st.sampled_from(list("<>{}[]|/_ \n\"'tool_call:=,abc")), max_size=60),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_arbitrary_text_never_raises_and_loses_nothing_without_calls(
    family: str, text: str, cuts: list[int]
) -> None:
    content, calls, _ = run(family, split(text, cuts))
    if not calls and not TOOL_FORMATS[family].drop:
        assert content == text  # no call found: the text comes back whole


def test_arguments_keep_unicode_unescaped() -> None:
    _, calls, _ = run(
        "hermes", ['<tool_call>{"name": "s", "arguments": {"q": "東京"}}</tool_call>']
    )
    assert calls[0].arguments == '{"q": "東京"}'


def test_ids_are_fresh_and_openai_shaped() -> None:
    parser = tool_call_parser("hermes")
    parser.feed('<tool_call>{"name": "a", "arguments": {}}</tool_call>' * 2)
    parser.finish()
    ids = [c.id for c in parser.tool_calls]
    assert len(set(ids)) == 2
    assert all(i.startswith("call_") and len(i) == 29 for i in ids)


def test_kimi_keeps_the_models_own_call_ids() -> None:
    text = (
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>'
    )
    _, calls, _ = run("kimi_k2", [text])
    assert calls == [ToolCall("functions.get_weather:0", "get_weather", '{"city": "Paris"}')]


def test_content_streams_before_the_output_ends() -> None:
    parser = tool_call_parser("hermes")
    assert parser.feed("Hello wor").content == "Hello wor"
    assert parser.feed("ld <tool").content == "ld"  # " " and a maybe-marker wait
    assert parser.feed("box>").content == " <toolbox>"


def test_a_block_cut_off_by_max_tokens_comes_back_as_content() -> None:
    content, calls, _ = run("hermes", ['Hi <tool_call>{"name": "f", "argu'])
    assert (content, calls) == ('Hi <tool_call>{"name": "f", "argu', [])


def test_finish_twice_adds_nothing() -> None:
    parser = tool_call_parser("mistral")
    parser.feed('[TOOL_CALLS][{"name": "f", "arguments": {}}]')
    assert len(parser.finish().tool_calls) == 2
    assert parser.finish().tool_calls == []
