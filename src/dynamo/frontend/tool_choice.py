"""`tool_choice` "required" and a named function: enforced, one of two ways.

Where the workers honour guided decoding (the card's `structured_output`: vLLM), the choice
becomes a JSON-schema constraint, as vLLM's own OpenAI server does: a named function's
`parameters` schema (the output is its arguments), or for "required" an array of
`{"name": <one of the tools>, "parameters": <its schema>}` with at least one item (at most
one when `parallel_tool_calls` is false). The output is then parsed as that JSON
(`dynamo.protocols.parsers.forced`), whatever the card's tool-call parser.

Elsewhere the model is only asked (the template gets `tool_choice`), and the frontend checks
the answer: an output without a call (of the named function) is an OpenAI-shaped error, 500
`model_error`, as OpenAI answers a model that broke its contract; a retry may succeed.
"""

from __future__ import annotations

from typing import Any

from dynamo.frontend.errors import ToolChoiceNotHonouredError
from dynamo.frontend.protocol import ChatCompletionRequest, NamedToolChoice
from dynamo.protocols.model_card import ModelCard
from dynamo.protocols.parsers.base import ToolCall, ToolCallParser
from dynamo.protocols.parsers.forced import NamedCallParser, RequiredCallsParser
from dynamo.runtime.errors import InvalidRequestError

EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def forced_name(req: ChatCompletionRequest) -> str | None:
    choice = req.tool_choice
    return choice.function.name if isinstance(choice, NamedToolChoice) else None


def forces_call(req: ChatCompletionRequest) -> bool:
    return bool(req.tools) and (req.tool_choice == "required" or forced_name(req) is not None)


def call_schema(req: ChatCompletionRequest) -> dict[str, Any]:
    """The JSON schema that makes the output the forced call(s)."""
    tools = {t.function.name: t.function.parameters or EMPTY_OBJECT for t in req.tools or []}
    name = forced_name(req)
    if name is not None:
        return tools[name]
    defs: dict[str, Any] = {}
    items = []
    for fn, params in tools.items():
        params = dict(params)
        for key, value in (params.pop("$defs", None) or {}).items():
            if defs.setdefault(key, value) != value:
                raise InvalidRequestError(
                    f"tools: `$defs` entry {key!r} differs between tools", param="tools"
                )
        items.append(
            {
                "properties": {"name": {"type": "string", "enum": [fn]}, "parameters": params},
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": items},
    }
    if req.parallel_tool_calls is False:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


def guided_decoding(req: ChatCompletionRequest) -> dict[str, Any]:
    """The `sampling_options.guided_decoding` of a forced choice (engines that honour it)."""
    if req.guided_decoding() is not None:
        raise InvalidRequestError(
            f"{req.guided_param()}: cannot constrain the output together with tool_choice "
            f"{req.tool_choice if isinstance(req.tool_choice, str) else 'naming a function'}",
            param=req.guided_param(),
        )
    return {"json": call_schema(req)}


def constrained_parser(req: ChatCompletionRequest) -> ToolCallParser:
    name = forced_name(req)
    return NamedCallParser(name) if name is not None else RequiredCallsParser()


def check_card(req: ChatCompletionRequest, card: ModelCard) -> dict[str, Any] | None:
    """Before serving a forced choice: the constraint for the engine (None when the model is
    only asked); a 400 when its calls could not even be recognised."""
    if not forces_call(req):
        return None
    if card.structured_output:
        return guided_decoding(req)
    if card.tool_call_parser is None:
        raise InvalidRequestError(
            f"tool_choice: the workers of model `{card.name}` can neither constrain their "
            "output nor parse tool calls (start them with --dyn-tool-call-parser)",
            param="tool_choice",
        )
    return None


def check_calls(req: ChatCompletionRequest, calls: list[ToolCall]) -> None:
    """An unconstrained engine's answer to a forced choice: raise when it has no such call."""
    name = forced_name(req)
    if name is None and not calls:
        raise ToolChoiceNotHonouredError(
            'The model answered without a tool call, which tool_choice "required" demands '
            "(its workers cannot constrain their output); retry or relax tool_choice"
        )
    if name is not None and not any(c.name == name for c in calls):
        raise ToolChoiceNotHonouredError(
            f"The model answered without calling `{name}`, which tool_choice names (its "
            "workers cannot constrain their output); retry or relax tool_choice"
        )
