"""Anthropic's Messages API (`POST /v1/messages`, behind `--enable-anthropic-api`) as an
adapter over chat completions, like `responses_api`.

`to_chat_body` maps `system`, text / `tool_use` / `tool_result` blocks, tools (`input_schema`)
and `tool_choice` (`auto`, `any` → required, `tool` → named, `none`) onto a chat request;
`to_message` maps the chat answer back to a Message (`thinking`, `text`, `tool_use` blocks,
`stop_reason` `end_turn` / `max_tokens` / `tool_use`); `error_body` gives Anthropic's error shape.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from dynamo.runtime.errors import InvalidRequestError

_MODEL = ConfigDict(strict=True, extra="ignore", frozen=True)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class AnthropicMessage(BaseModel):
    model_config = _MODEL
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class AnthropicTool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any]


class AnthropicToolChoice(BaseModel):
    model_config = _MODEL
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class MessagesRequest(BaseModel):
    model_config = _MODEL
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None


def _text(blocks: list[dict[str, Any]], where: str) -> str:
    out = []
    for i, b in enumerate(blocks):
        if b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise InvalidRequestError(
                f"{where}.{i}: block type {b.get('type')!r} is not supported here; only text",
                param=where,
            )
        out.append(b["text"])
    return "".join(out)


def _user(content: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Tool results first (as `tool` messages), then the user's text, in block order."""
    out: list[dict[str, Any]] = []
    text: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        if block.get("type") == "tool_result":
            result = block.get("content", "")
            if isinstance(result, list):
                result = _text(result, f"{where}.{i}.content")
            if not isinstance(result, str):
                raise InvalidRequestError(f"{where}.{i}.content: expected text", param=where)
            out.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": result}
            )
        else:
            text.append(block)
    if text:
        out.append({"role": "user", "content": _text(text, where)})
    return out


def _assistant(content: list[dict[str, Any]], where: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "tool_use":
            args = block.get("input", {})
            if not isinstance(args, dict):
                raise InvalidRequestError(f"{where}.{i}.input: expected an object", param=where)
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": json.dumps(args)},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # past thinking is not sent back to the model
        else:
            raise InvalidRequestError(f"{where}.{i}: block type {kind!r} is not supported")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def to_chat_body(req: MessagesRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else _text(req.system, "system")
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        where = f"messages.{i}.content"
        if isinstance(m.content, str):
            messages.append({"role": m.role, "content": m.content})
        elif m.role == "user":
            messages.extend(_user(m.content, where))
        else:
            messages.append(_assistant(m.content, where))
    body: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "stream": req.stream,
    }
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema,
                },
            }
            for t in req.tools
        ]
    choice = req.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequestError("tool_choice.name: required for type tool")
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    for src, dst in (
        ("stop_sequences", "stop"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ):
        value = getattr(req, src)
        if value is not None:
            body[dst] = value
    return body


def new_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_block(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": json.loads(arguments)}


def to_message(req: MessagesRequest, chat: dict[str, Any]) -> dict[str, Any]:
    choice = chat["choices"][0]
    message = choice["message"]
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call["function"]
        content.append(tool_use_block(call["id"], fn["name"], fn["arguments"]))
    usage = chat.get("usage") or {}
    return {
        "id": new_id(),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice["finish_reason"], "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }


def error_body(status: int, openai_body: bytes) -> bytes:
    """An OpenAI error body as Anthropic's `{"type": "error", "error": {"type", "message"}}`."""
    try:
        message = orjson.loads(openai_body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = "request failed"
    kind = _ERROR_TYPES.get(status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
