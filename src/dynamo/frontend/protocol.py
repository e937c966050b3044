"""Pydantic models of the OpenAI request bodies the frontend accepts.

Types are strict (a string is not a number, 1 is not `true`) and ranges are OpenAI's; unknown
fields are ignored. Bodies are parsed and validated in one step from the raw bytes
(`parse_body`), and every failure becomes an `InvalidRequestError` naming the bad parameter.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dynamo.protocols.engine import GuidedDecoding
from dynamo.runtime.errors import InvalidRequestError

_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False
    continuous_usage_stats: bool = False


class NvExt(BaseModel):
    """Dynamo's request extensions (router hints)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    backend_instance_id: int | None = Field(None, ge=0, description="route to this worker")
    ignore_eos: bool | None = None
    top_k: int | None = Field(None, ge=-1)
    min_tokens: int | None = Field(None, ge=0)


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _check(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format: type json_schema needs json_schema")
        return self


class _SamplingFields(BaseModel):
    """Fields common to chat and completions."""

    model_config = _STRICT

    model: str = Field(min_length=1, description="served model name")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, description="-1 or 0 disables")
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(1, ge=1, le=16, description="independent samples (choices)")
    stop: str | list[str] | None = Field(None, description="up to 4 stop strings")
    stop_token_ids: list[int] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    min_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool | None = None
    user: str | None = None
    nvext: NvExt | None = None
    extra_args: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    # vLLM's structured-output extensions; at most one (or response_format) per request
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = Field(None, min_length=1)
    guided_grammar: str | None = None

    @model_validator(mode="after")
    def _check_common(self) -> _SamplingFields:
        if isinstance(self.stop, list):
            if len(self.stop) > 4:
                raise ValueError("stop: at most 4 stop sequences are allowed")
            if any(s == "" for s in self.stop):
                raise ValueError("stop: stop sequences must not be empty")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        given = [
            name
            for name in ("guided_json", "guided_regex", "guided_choice", "guided_grammar")
            if getattr(self, name) is not None
        ]
        if self.response_format is not None and self.response_format.type != "text":
            given.append("response_format")
        if len(given) > 1:
            raise ValueError(f"{given[1]}: only one of {', '.join(given)} may constrain the output")
        return self

    def guided_decoding(self) -> GuidedDecoding | None:
        """The output constraint the engine must apply, if any."""
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_object":
            return {"json_object": True}
        if fmt is not None and fmt.json_schema is not None:
            schema = fmt.json_schema.schema_
            return {"json": schema} if schema is not None else {"json_object": True}
        if self.guided_json is not None:
            return {"json": self.guided_json}
        if self.guided_regex is not None:
            return {"regex": self.guided_regex}
        if self.guided_choice is not None:
            return {"choice": list(self.guided_choice)}
        if self.guided_grammar is not None:
            return {"grammar": self.guided_grammar}
        return None

    def guided_param(self) -> str:
        """The request field that asked for the constraint (for error messages)."""
        if self.response_format is not None and self.response_format.type != "text":
            return "response_format"
        for name in ("guided_json", "guided_regex", "guided_choice", "guided_grammar"):
            if getattr(self, name) is not None:
                return name
        return "response_format"

    # --- derived values the preprocessor uses ------------------------------------------
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        if isinstance(self.stop, str):
            return [self.stop] if self.stop else []
        return list(self.stop)

    def effective_ignore_eos(self) -> bool:
        if self.ignore_eos is not None:
            return self.ignore_eos
        return bool(self.nvext and self.nvext.ignore_eos)

    def effective_min_tokens(self) -> int | None:
        if self.min_tokens is not None:
            return self.min_tokens
        return self.nvext.min_tokens if self.nvext else None

    def effective_top_k(self) -> int | None:
        if self.top_k is not None:
            return self.top_k
        return self.nvext.top_k if self.nvext else None

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def continuous_usage(self) -> bool:
        """Every chunk carries the usage so far (vLLM's `continuous_usage_stats`, which
        takes effect with `include_usage`, as in vLLM)."""
        return self.include_usage() and bool(
            self.stream_options and self.stream_options.continuous_usage_stats
        )

    def backend_instance_id(self) -> int | None:
        return self.nvext.backend_instance_id if self.nvext else None


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: str = Field(min_length=1)
    arguments: str = Field(description="JSON text of the arguments, as the model produced it")


class AssistantToolCall(BaseModel):
    """A call in an assistant message the client sends back (the agent loop)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: NamedFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[AssistantToolCall] | None = None

    @model_validator(mode="after")
    def _check_tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str | None:
        """The message text; content parts other than text are rejected."""
        if self.content is None or isinstance(self.content, str):
            return self.content
        out = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"content part of type {part.type!r} is not supported; only text",
                    param="messages",
                )
            out.append(part.text)
        return "".join(out)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _check_tools(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        choice = self.tool_choice
        if choice is None or choice in ("none", "auto"):
            return self
        if not names:
            raise ValueError("tool_choice: needs tools to choose from")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(
                f"tool_choice: function {choice.function.name!r} is not among the tools"
            )
        return self

    def rendered_tools(self) -> list[dict[str, Any]] | None:
        """The tools the chat template shows the model: none for `tool_choice: none` (the
        model cannot call what it is not shown), only the named one for a named choice."""
        if not self.tools or self.tool_choice == "none":
            return None
        tools = self.tools
        if isinstance(self.tool_choice, NamedToolChoice):
            tools = [t for t in tools if t.function.name == self.tool_choice.function.name]
        return [t.model_dump(exclude_none=True) for t in tools]

    def parses_tool_calls(self) -> bool:
        """Whether the output may hold tool calls to parse (tools given, not `none`)."""
        return bool(self.tools) and self.tool_choice != "none"

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def num_logprobs(self) -> int | None:
        if not self.logprobs:
            return None
        return self.top_logprobs or 0


class CompletionRequest(_SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]] = Field(
        description="one prompt: a string or token ids"
    )
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    @model_validator(mode="after")
    def _check_completion(self) -> CompletionRequest:
        if self.echo and self.logprobs is not None:
            raise ValueError(
                "echo: echo with logprobs is not supported (engines return no prompt logprobs)"
            )
        if self.best_of not in (None, 1):
            raise ValueError("best_of: only best_of=1 is supported")
        if self.suffix:
            raise ValueError("suffix: suffix is not supported")
        if isinstance(self.prompt, list):
            if len(self.prompt) == 0:
                raise ValueError("prompt: must not be empty")
            if isinstance(self.prompt[0], (str, list)) and len(self.prompt) != 1:
                raise ValueError("prompt: batched prompts are not supported; send one prompt")
        return self

    def single_prompt(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            return p[0]
        return p  # type: ignore[return-value]

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def num_logprobs(self) -> int | None:
        return self.logprobs


class EmbeddingRequest(BaseModel):
    model_config = _STRICT
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @model_validator(mode="after")
    def _check_input(self) -> EmbeddingRequest:
        if isinstance(self.input, list) and len(self.input) == 0:
            raise ValueError("input: must not be empty")
        if self.input == "":
            raise ValueError("input: must not be empty")
        return self

    def inputs(self) -> list[str | list[int]]:
        x = self.input
        if isinstance(x, str):
            return [x]
        if x and isinstance(x[0], int):
            return [x]
        return list(x)  # type: ignore[arg-type]


class _TokenIdsFirst(CompletionRequest):
    """`CompletionRequest` for the common prompts only, token ids tried first: pydantic's smart
    union over the four prompt shapes costs half as much again as one `list[int]` for a long
    token-id prompt (~0.12 ms of 0.38 at 8k ids; benchmarks/frontend_request_cpu.py). It
    accepts a body only if `CompletionRequest` accepts it with the same values; any other body,
    bad ones included, is validated again by `CompletionRequest` itself, so errors and batched
    prompts are exactly as before."""

    prompt: list[int] | str = Field(union_mode="left_to_right")


# Fast first tries for models whose common bodies validate faster another way (see above).
_FIRST_TRY: dict[type[BaseModel], type[BaseModel]] = {CompletionRequest: _TokenIdsFirst}

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: bytes) -> M:
    """Parse and validate a JSON body; raise `InvalidRequestError` with an OpenAI-style message."""
    first = _FIRST_TRY.get(model)
    if first is not None:
        try:
            return first.model_validate_json(body)  # type: ignore[return-value]
        except ValidationError:
            pass  # `model` decides, and words the error
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _to_invalid_request(exc) from None


_SCALAR_TAGS = frozenset({"str", "int", "float", "bool", "none", "function-after"})


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (
        "[" in part or part in _SCALAR_TAGS or part[:1].isupper() or part.startswith("function-")
    )


def _to_invalid_request(exc: ValidationError) -> InvalidRequestError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return InvalidRequestError(f"Invalid JSON body: {first['msg']}", param=None)
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidRequestError("The request body must be a JSON object", param=None)
    # Group by location without pydantic's union-branch tags, so `stop: 5` reads as one error.
    grouped: dict[str, list[str]] = {}
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "value_error" and not loc:
            field, _, rest = msg.partition(": ")  # our validators say "field: explanation"
            if rest:
                loc, msg = field, rest
        grouped.setdefault(loc, []).append(msg)
    parts = []
    for loc, msgs in list(grouped.items())[:5]:
        if len(msgs) > 1:
            kinds = [m.removeprefix("Input should be a valid ") for m in msgs]
            msg = "invalid type; expected " + " or ".join(dict.fromkeys(kinds))
        else:
            msg = msgs[0]
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = f" (and {len(grouped) - 5} more)" if len(grouped) > 5 else ""
    param = next((loc for loc in grouped if loc), None)
    return InvalidRequestError("Invalid request: " + "; ".join(parts) + more, param=param)
