"""Streaming `/v1/messages`: chat completion chunks in, Anthropic events out.

`message_start`, then per content block `content_block_start`, its deltas (`thinking_delta`,
`text_delta`, `input_json_delta`) and `content_block_stop`; at the end `message_delta` (stop
reason, usage) and `message_stop`. An error after the start is an `error` event.
"""

from __future__ import annotations

from typing import Any

import orjson

from dynamo.frontend import anthropic_api as aa


def event(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **body}) + b"\n\n"


class MessageEvents:
    def __init__(self, req: aa.MessagesRequest) -> None:
        self.req = req
        self.id = aa.new_id()
        self.index = -1
        self.open: str | None = None  # the kind of the block being streamed
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.failed = False

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.req.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event("message_start", {"message": message})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.open = block["type"]
        return out + event("content_block_start", {"index": self.index, "content_block": block})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return event("content_block_stop", {"index": self.index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self.index, "delta": delta})

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = b""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            thinking = delta.get("reasoning_content") or delta.get("reasoning")
            if thinking:
                if self.open != "thinking":
                    out += self._open({"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta({"type": "thinking_delta", "thinking": thinking})
            if delta.get("content"):
                if self.open != "text":
                    out += self._open({"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": delta["content"]})
            for piece in delta.get("tool_calls") or []:
                fn = piece.get("function") or {}
                if piece.get("id"):
                    block = {"type": "tool_use", "id": piece["id"], "name": fn.get("name")}
                    out += self._open({**block, "input": {}})
                if fn.get("arguments") and self.open == "tool_use":
                    out += self._delta(
                        {"type": "input_json_delta", "partial_json": fn["arguments"]}
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> bytes:
        if self.failed:
            return b""
        stop = aa.STOP_REASONS.get(self.finish or "stop", "end_turn")
        usage = {
            "input_tokens": self.usage.get("prompt_tokens", 0),
            "output_tokens": self.usage.get("completion_tokens", 0),
        }
        return (
            self._close()
            + event(
                "message_delta",
                {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage},
            )
            + event("message_stop", {})
        )

    def error(self, body: dict[str, Any]) -> bytes:
        self.failed = True
        message = (body.get("error") or {}).get("message") or "request failed"
        return event("error", {"error": {"type": "api_error", "message": message}})
