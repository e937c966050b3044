"""Parser names: Dynamo's names and aliases, unknown names refused with the list."""

from __future__ import annotations

import pytest

from dynamo.protocols.parsers.registry import (
    REASONING_PARSER_NAMES,
    TOOL_CALL_PARSER_NAMES,
    check_reasoning_parser,
    check_tool_call_parser,
    reasoning_parser,
    tool_call_parser,
)
from dynamo.runtime.errors import ConfigError


def test_the_issues_families_are_all_known() -> None:
    wanted = {"hermes", "llama3_json", "mistral", "pythonic", "qwen3_coder", "deepseek_v3"}
    wanted |= {"deepseek_v3_1", "harmony", "kimi_k2", "glm45"}
    assert wanted <= set(TOOL_CALL_PARSER_NAMES)
    assert {"deepseek_r1", "qwen3", "gpt_oss", "basic", "granite", "mistral"} <= set(
        REASONING_PARSER_NAMES
    )


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown tool-call parser 'hermez'; known: .*hermes"):
        check_tool_call_parser("hermez")
    with pytest.raises(ConfigError, match=r"unknown reasoning parser 'r1'; known: .*deepseek_r1"):
        check_reasoning_parser("r1")


def test_aliases_parse_like_their_family() -> None:
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    parser = tool_call_parser("qwen25")
    parser.feed(text)
    parser.finish()
    assert [c.name for c in parser.tool_calls] == ["f"]
    assert reasoning_parser("deepseek_v3_1").feed("a</think>b").content == "b"
