"""Parser names as workers take them (`--dyn-tool-call-parser`, `--dyn-reasoning-parser`)."""

from __future__ import annotations

from collections.abc import Callable

from dynamo.protocols.parsers.base import ReasoningParser, ToolCallParser, new_call_id
from dynamo.protocols.parsers.reasoning import FORMATS as THINK_FORMATS
from dynamo.protocols.parsers.reasoning import ThinkParser
from dynamo.protocols.parsers.tool_engine import MarkupToolParser, ToolFormat
from dynamo.protocols.parsers.tools import (
    deepseek,
    glm45,
    harmony,
    hermes,
    kimi_k2,
    llama3_json,
    mistral,
    pythonic,
    qwen3_coder,
)
from dynamo.runtime.errors import ConfigError

TOOL_FORMATS: dict[str, ToolFormat] = {
    "hermes": hermes.FORMAT,
    "llama3_json": llama3_json.FORMAT,
    "mistral": mistral.FORMAT,
    "pythonic": pythonic.FORMAT,
    "qwen3_coder": qwen3_coder.FORMAT,
    "deepseek_v3": deepseek.V3,
    "deepseek_v3_1": deepseek.V3_1,
    "harmony": harmony.FORMAT,
    "kimi_k2": kimi_k2.FORMAT,
    "glm45": glm45.FORMAT,
}
# Dynamo's other names for the same output formats.
TOOL_ALIASES = {"qwen25": "hermes", "qwen3": "hermes", "glm47": "glm45", "gpt_oss": "harmony"}
REASONING_ALIASES = {"deepseek_v3": "deepseek_r1", "deepseek_v3_1": "deepseek_r1"}

TOOL_CALL_PARSER_NAMES = tuple(sorted([*TOOL_FORMATS, *TOOL_ALIASES]))
REASONING_PARSER_NAMES = tuple(sorted([*THINK_FORMATS, *REASONING_ALIASES]))


def check_tool_call_parser(name: str) -> str:
    """`name` if it is a known tool-call parser; ConfigError listing the known ones if not."""
    if name not in TOOL_CALL_PARSER_NAMES:
        raise ConfigError(
            f"unknown tool-call parser {name!r}; known: {', '.join(TOOL_CALL_PARSER_NAMES)}"
        )
    return name


def check_reasoning_parser(name: str) -> str:
    if name not in REASONING_PARSER_NAMES:
        raise ConfigError(
            f"unknown reasoning parser {name!r}; known: {', '.join(REASONING_PARSER_NAMES)}"
        )
    return name


def tool_call_parser(name: str, make_id: Callable[[], str] = new_call_id) -> ToolCallParser:
    check_tool_call_parser(name)
    return MarkupToolParser(TOOL_FORMATS[TOOL_ALIASES.get(name, name)], make_id)


def reasoning_parser(name: str) -> ReasoningParser:
    check_reasoning_parser(name)
    return ThinkParser(THINK_FORMATS[REASONING_ALIASES.get(name, name)])
