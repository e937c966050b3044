"""Every tool-call family against its vectors, whole and split at every chunk boundary."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.protocols.parsers.vectors import DC_B, DC_E, DS_SEP, VECTORS, Calls

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


def check_chunked(family: str, text: str, chunks: list[str]) -> None:
    """A chunked run against the whole-text run: the same content and calls, and each call's
    streamed fragments add up to its arguments exactly. The one allowed difference: a
    malformed block whose call had begun to stream keeps that call (sent text is not taken
    back); its fragments still add up to its arguments and no markup reaches content."""
    whole_content, whole_calls, _ = run(family, [text])
    content, calls, streamed = run(family, chunks)
    assert [s["arguments"] for s in streamed] == [c.arguments for c in calls]
    assert [(s["id"], s["name"]) for s in streamed] == [(c.id, c.name) for c in calls]
    if whole_calls or not calls:
        assert content == whole_content
        assert [(c.name, c.arguments) for c in calls] == [
            (c.name, c.arguments) for c in whole_calls
        ]
    else:
        assert TOOL_FORMATS[family].head is not None
        assert all(c.arguments.startswith("{") and c.arguments in text for c in calls)
        assert len(content) < len(whole_content)


@pytest.mark.parametrize(("family", "text", "content", "calls"), VECTORS)
def test_vector_one_character_at_a_time(family: str, text: str, content: str, calls: Calls) -> None:
    check_chunked(family, text, list(text))


@pytest.mark.parametrize(("family", "text", "content", "calls"), VECTORS)
def test_vector_split_in_two_at_every_boundary(
    family: str, text: str, content: str, calls: Calls
) -> None:
    for cut in range(len(text) + 1):
        check_chunked(family, text, [text[:cut], text[cut:]])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VECTORS), st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_streams_fragments_that_add_up_to_the_whole_text_result(
    vector: tuple[str, str, str, Calls], cuts: list[int]
) -> None:
    family, text, _, _ = vector
    check_chunked(family, text, split(text, cuts))


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


LONG_ARGS = '{"path": "/srv/data/report.txt", "content": "' + "lorem ipsum " * 20 + '"}'
STREAMED_FORMS = {
    "hermes": f'<tool_call>\n{{"name": "write", "arguments": {LONG_ARGS}}}\n</tool_call>',
    "deepseek_v3": f"{DC_B}function{DS_SEP}write\n```json\n{LONG_ARGS}\n```{DC_E}",
    "deepseek_v3_1": f"{DC_B}write{DS_SEP}{LONG_ARGS}{DC_E}",
    "kimi_k2": "<|tool_call_begin|>functions.write:0<|tool_call_argument_begin|>"
    + LONG_ARGS
    + "<|tool_call_end|>",
    "harmony": f"<|channel|>commentary to=functions.write <|constrain|>json<|message|>{LONG_ARGS}"
    "<|call|>",
}


@pytest.mark.parametrize("family", sorted(STREAMED_FORMS))
def test_arguments_stream_as_the_model_writes_them(family: str) -> None:
    text = STREAMED_FORMS[family]
    parser = tool_call_parser(family)
    pieces = []
    for i in range(0, len(text), 7):
        pieces += parser.feed(text[i : i + 7]).tool_calls
    pieces += parser.finish().tool_calls
    assert pieces[0].name == "write" and pieces[0].arguments == ""
    fragments = [p.arguments for p in pieces[1:]]
    assert len(fragments) > 10  # sent as it came, not once the block closed
    assert "".join(fragments) == LONG_ARGS == parser.tool_calls[0].arguments
    assert all("<" not in f and "`" not in f for f in fragments)


def test_name_is_sent_before_the_arguments_are_complete() -> None:
    parser = tool_call_parser("hermes")
    first = parser.feed('<tool_call>{"name": "write", "arguments": {"pa')
    assert [(d.name, d.arguments) for d in first.tool_calls] == [("write", ""), (None, '{"pa')]


def test_a_streamed_call_cut_off_by_max_tokens_keeps_what_was_sent() -> None:
    text = 'Hi <tool_call>{"name": "f", "arguments": {"city": "Par'
    content, calls, streamed = run("hermes", list(text))
    assert content == "Hi"
    assert [(c.name, c.arguments) for c in calls] == [("f", '{"city": "Par')]
    assert streamed[0]["arguments"] == '{"city": "Par'


def test_families_without_streamable_arguments_send_the_call_whole() -> None:
    parser = tool_call_parser("llama3_json")
    text = '<|python_tag|>{"name": "f", "parameters": {"a": "' + "x" * 50 + '"}}'
    assert all(parser.feed(text[i : i + 5]).tool_calls == [] for i in range(0, len(text), 5))
    done = parser.finish().tool_calls
    assert [(d.name, d.arguments) for d in done] == [("f", ""), (None, '{"a": "' + "x" * 50 + '"}')]
