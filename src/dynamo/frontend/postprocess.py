"""A choice's generated text through the model's output parsers (`dynamo.protocols.parsers`).

The worker names its parsers in the model card (`--dyn-tool-call-parser`,
`--dyn-reasoning-parser`); `choice_parser` builds the pair for one chat request (tool calls only
when the request has tools and `tool_choice` is not `none`). `ChoiceParser.step` turns each
`Step` into the pieces of an OpenAI delta; `message` and `delta` render them, reasoning under
the frontend's `--reasoning-field-name`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynamo.frontend import tool_choice as tc
from dynamo.frontend.generation import Step
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest
from dynamo.protocols.model_card import ModelCard
from dynamo.protocols.parsers.base import ToolCall, ToolCallDelta, ToolCallParser
from dynamo.protocols.parsers.pipeline import OutputParser
from dynamo.protocols.parsers.registry import reasoning_parser, tool_call_parser
from dynamo.runtime.errors import ConfigError

log = logging.getLogger(__name__)
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(slots=True)
class ParsedStep:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish: str | None = None
    logprobs: dict[str, Any] | None = None


class ChoiceParser:
    """The parsers of one choice; `calls` holds every complete tool call so far."""

    def __init__(
        self, parser: OutputParser, check: Callable[[list[ToolCall]], None] | None = None
    ) -> None:
        self._parser = parser
        self._check = check  # raises when the finished output breaks tool_choice

    @property
    def calls(self) -> list[ToolCall]:
        return self._parser.tool_calls

    def step(self, step: Step) -> ParsedStep:
        out = self._parser.feed(step.text) if step.text else None
        parsed = ParsedStep(logprobs=step.logprobs)
        if out is not None:
            parsed.content, parsed.reasoning = out.content, out.reasoning
            parsed.tool_calls = list(out.tool_calls)
        if step.finish is not None:
            last = self._parser.finish()
            parsed.content += last.content
            parsed.reasoning += last.reasoning
            parsed.tool_calls += last.tool_calls
            if self._check is not None:
                self._check(self.calls)
            # The model stopped to call tools: OpenAI says so; a cut-off output stays "length".
            parsed.finish = "tool_calls" if self.calls and step.finish == "stop" else step.finish
        return parsed


def choice_parser(
    card: ModelCard, req: ChatCompletionRequest | CompletionRequest
) -> ChoiceParser | None:
    """The parsers for one choice of `req`, or None when the text passes through as is."""
    if not isinstance(req, ChatCompletionRequest):
        return None
    check = None
    try:
        reasoning = reasoning_parser(card.reasoning_parser) if card.reasoning_parser else None
        tools: ToolCallParser | None = None
        if tc.forces_call(req) and card.structured_output:
            tools = tc.constrained_parser(req)  # the output is the constrained JSON
        elif card.tool_call_parser and req.parses_tool_calls():
            tools = tool_call_parser(card.tool_call_parser)
            if tc.forces_call(req):
                check = functools.partial(tc.check_calls, req)
    except ConfigError as exc:  # a worker newer than this frontend: serve the text unparsed
        log.warning("model %s: %s; its output is not parsed", card.name, exc)
        return None
    if reasoning is None and tools is None:
        return None
    return ChoiceParser(OutputParser(reasoning, tools), check)


def tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def tool_call_delta_dict(d: ToolCallDelta) -> dict[str, Any]:
    if d.id is None:
        return {"index": d.index, "function": {"arguments": d.arguments}}
    return {
        "index": d.index,
        "id": d.id,
        "type": "function",
        "function": {"name": d.name, "arguments": d.arguments},
    }


def message(
    content: str, reasoning: str, calls: list[ToolCall], reasoning_field: str
) -> dict[str, Any]:
    """The assistant message of a parsed choice (content null when only calls came back)."""
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": content if content or not calls else None,
    }
    if reasoning:
        msg[reasoning_field] = reasoning
    if calls:
        msg["tool_calls"] = [tool_call_dict(c) for c in calls]
    return msg


def deltas(parsed: ParsedStep, reasoning_field: str) -> list[dict[str, Any]]:
    """The chunk deltas of one parsed step: reasoning, content, then one per tool-call piece."""
    out: list[dict[str, Any]] = []
    if parsed.reasoning:
        out.append({reasoning_field: parsed.reasoning})
    if parsed.content:
        out.append({"content": parsed.content})
    out.extend({"tool_calls": [tool_call_delta_dict(d)]} for d in parsed.tool_calls)
    return out
