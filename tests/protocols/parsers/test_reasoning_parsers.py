"""Reasoning parsers: think blocks split from the answer, whole and in any chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.protocols.parsers.pipeline import OutputParser
from dynamo.protocols.parsers.reasoning import FORMATS
from dynamo.protocols.parsers.registry import reasoning_parser, tool_call_parser

# (parser, model output, expected reasoning, expected content)
VECTORS = [
    ("deepseek_r1", "Paris is in France.</think>\n\nParis.", "Paris is in France.", "\n\nParis."),
    ("deepseek_r1", "<think>\nHmm, 東京?</think>Tokyo.", "\nHmm, 東京?", "Tokyo."),
    ("deepseek_r1", "Cut off by max_tokens, still thin", "Cut off by max_tokens, still thin", ""),
    ("basic", "<think>a < b</think>Yes.", "a < b", "Yes."),
    ("basic", "No thinking here.", "", "No thinking here."),
    ("qwen3", "<think>\nStep 1.\n</think>\n\nDone.", "\nStep 1.\n", "\n\nDone."),
    ("qwen3", "<think>cut off", "cut off", ""),
    ("glm45", "<think>x</think>y", "x", "y"),
    ("kimi", "◁think▷deep◁/think▷answer", "deep", "answer"),
    ("mistral", "[THINK]Let me see.[/THINK]42", "Let me see.", "42"),
    (
        "granite",
        "Here is my thought process: add them. Here is my response: 4",
        " add them. ",
        " 4",
    ),
    (
        "gpt_oss",
        "<|channel|>analysis<|message|>User wants weather.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>",
        "User wants weather.",
        "It is sunny.",
    ),
]


def run(name: str, chunks: list[str]) -> tuple[str, str]:
    parser = reasoning_parser(name)
    reasoning = content = ""
    for d in [parser.feed(c) for c in chunks] + [parser.finish()]:
        reasoning += d.reasoning
        content += d.content
    return reasoning, content


def test_every_format_has_a_vector() -> None:
    assert {v[0] for v in VECTORS} == set(FORMATS)


@pytest.mark.parametrize(("name", "text", "reasoning", "content"), VECTORS)
def test_vector_whole_and_by_character(name: str, text: str, reasoning: str, content: str) -> None:
    assert run(name, [text]) == (reasoning, content)
    assert run(name, list(text)) == (reasoning, content)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VECTORS), st.lists(st.integers(min_value=0), max_size=10))
def test_any_chunking_gives_the_whole_text_result(
    vector: tuple[str, str, str, str], cuts: list[int]
) -> None:
    name, text, reasoning, content = vector
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in itertools.pairwise([0, *points, len(text)])]
    assert run(name, chunks) == (reasoning, content)


def test_reasoning_then_tool_calls_in_one_output() -> None:
    parser = OutputParser(reasoning_parser("deepseek_r1"), tool_call_parser("hermes"))
    text = (
        'Need weather.</think>\n\n<tool_call>{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}</tool_call>'
    )
    deltas = [parser.feed(c) for c in text] + [parser.finish()]
    assert "".join(d.reasoning for d in deltas) == "Need weather."
    assert "".join(d.content for d in deltas) == ""
    assert [(c.name, c.arguments) for c in parser.tool_calls] == [
        ("get_weather", '{"city": "Paris"}')
    ]


def test_harmony_reasoning_and_call_together() -> None:
    parser = OutputParser(reasoning_parser("gpt_oss"), tool_call_parser("harmony"))
    text = (
        "<|channel|>analysis<|message|>Call the tool.<|end|><|start|>assistant<|channel|>"
        'commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Oslo"}<|call|>'
    )
    deltas = [parser.feed(text), parser.finish()]
    assert "".join(d.reasoning for d in deltas) == "Call the tool."
    assert "".join(d.content for d in deltas) == ""
    assert [c.name for c in parser.tool_calls] == ["get_weather"]


def test_no_parsers_pass_text_through() -> None:
    parser = OutputParser()
    assert parser.feed("<think>x</think>").content == "<think>x</think>"
