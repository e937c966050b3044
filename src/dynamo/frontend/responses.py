"""OpenAI response bodies and SSE chunks, built as bytes.

Finish reasons arrive here already mapped to OpenAI's (`dynamo.frontend.generation` decides
how a stream ends). Streaming chunks come from per-response byte templates: everything but the
text is rendered once, so a token costs one `orjson.dumps` of its text and two concatenations.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
_NULL_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage_dict(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached or 0},
    }


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _envelope(
    request_id: str, obj: str, created: int, model: str, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    """The fields every response body and chunk starts with, in OpenAI's order."""
    return {"id": request_id, "object": obj, "created": created, "model": model, "choices": choices}


class ChunkTemplates:
    """The SSE chunks of one streamed response (chat or completion)."""

    __slots__ = ("_head", "_mid", "_obj", "created", "id", "index", "is_chat", "model")

    def __init__(self, *, chat: bool, request_id: str, model: str, index: int = 0) -> None:
        self.is_chat = chat
        self.index = index
        self.id = request_id
        self.model = model
        self.created = int(time.time())
        self._obj = "chat.completion.chunk" if chat else "text_completion"
        self._head = (
            b'data: {"id":'
            + orjson.dumps(request_id)
            + b',"object":"'
            + self._obj.encode()
            + b'","created":'
            + str(self.created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"choices":[{"index":'
            + str(index).encode()
            + b","
        )
        self._mid = b'"delta":{"content":' if chat else b'"text":'

    def text(self, text: str) -> bytes:
        """A chunk carrying `text` and no finish reason (the hot path)."""
        if self.is_chat:
            return self._head + self._mid + orjson.dumps(text) + b"}" + _NULL_TAIL
        return self._head + self._mid + orjson.dumps(text) + _NULL_TAIL

    def role(self) -> bytes:
        """The first chat chunk: the assistant role, empty content."""
        return self._head + b'"delta":{"role":"assistant","content":""}' + _NULL_TAIL

    def delta(
        self,
        delta: dict[str, Any],
        *,
        finish: str | None = None,
        logprobs: Any = None,
        usage: dict[str, Any] | None = None,
    ) -> bytes:
        """A chat chunk with a structured delta (reasoning, tool calls)."""
        choice = {
            "index": self.index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish,
        }
        body = _envelope(self.id, self._obj, self.created, self.model, [choice])
        if usage is not None:
            body["usage"] = usage
        return sse(body)

    def _choice(self, text: str | None, finish: str | None, logprobs: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": self.index}
        if self.is_chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        choice["logprobs"] = logprobs
        choice["finish_reason"] = finish
        return choice

    def chunk(
        self,
        text: str | None,
        *,
        finish: str | None = None,
        logprobs: Any = None,
        usage: dict[str, Any] | None = None,
    ) -> bytes:
        """A general chunk: the finish chunk, logprobs, or continuous usage."""
        choices = [self._choice(text, finish, logprobs)]
        body = _envelope(self.id, self._obj, self.created, self.model, choices)
        if usage is not None:
            body["usage"] = usage
        return sse(body)

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The final usage chunk of `stream_options.include_usage` (no choices)."""
        body = _envelope(self.id, self._obj, self.created, self.model, [])
        body["usage"] = usage
        return sse(body)


def chat_choice(
    index: int, message: dict[str, Any], finish: str | None, logprobs: Any = None
) -> dict[str, Any]:
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def completion_choice(
    index: int, text: str, finish: str | None, logprobs: Any = None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def body_of(
    *,
    chat: bool,
    request_id: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    usage: dict[str, Any],
) -> bytes:
    """A whole response with several choices (`n` > 1, parsed tool calls, reasoning)."""
    obj = "chat.completion" if chat else "text_completion"
    body = _envelope(request_id, obj, created, model, choices)
    body["usage"] = usage
    return orjson.dumps(body)


def chat_completion(
    *,
    request_id: str,
    model: str,
    created: int,
    text: str,
    finish: str | None,
    usage: dict[str, Any],
    logprobs: Any = None,
) -> bytes:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": logprobs,
        "finish_reason": finish,
    }
    body = _envelope(request_id, "chat.completion", created, model, [choice])
    body["usage"] = usage
    return orjson.dumps(body)


def completion(
    *,
    request_id: str,
    model: str,
    created: int,
    text: str,
    finish: str | None,
    usage: dict[str, Any],
    logprobs: Any = None,
) -> bytes:
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
    body = _envelope(request_id, "text_completion", created, model, [choice])
    body["usage"] = usage
    return orjson.dumps(body)


def error_event(body: bytes) -> bytes:
    """An error inside a stream that already started (followed by `DONE`)."""
    return b"data: " + body + b"\n\n"
