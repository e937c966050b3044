"""Streaming `/v1/responses`: chat completion chunks in, Responses API events out.

One `ResponseEvents` per stream. Each output item (reasoning, message, function_call) is opened
with `response.output_item.added`, grows by deltas (`response.reasoning_text.delta`,
`response.output_text.delta`, `response.function_call_arguments.delta`) and is closed with its
`.done` events when the next item starts or the stream ends; `response.completed` (or
`response.incomplete`) carries the whole Response at the end.
"""

from __future__ import annotations

from typing import Any

import orjson

from dynamo.frontend import responses_api as ra


def event(kind: str, seq: int, **fields: Any) -> bytes:
    body = {"type": kind, "sequence_number": seq, **fields}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class ResponseEvents:
    def __init__(self, req: ra.ResponsesRequest, response_id: str, created_at: int) -> None:
        self.req = req
        self.id = response_id
        self.created_at = created_at
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.failed = False

    def _ev(self, kind: str, **fields: Any) -> bytes:
        out = event(kind, self.seq, **fields)
        self.seq += 1
        return out

    def _response(self, status: str) -> dict[str, Any]:
        return ra.response_object(
            self.req,
            self.id,
            self.output,
            status=status,
            usage=ra.usage_of(self.usage),
            created_at=self.created_at,
        )

    def start(self) -> bytes:
        response = self._response("in_progress")
        return self._ev("response.created", response=response) + self._ev(
            "response.in_progress", response=response
        )

    # --- items ---------------------------------------------------------------------------
    def _open(self, item: dict[str, Any]) -> bytes:
        out = self._close()
        self.output.append(item)
        self.open = item
        index = len(self.output) - 1
        out += self._ev("response.output_item.added", output_index=index, item=item)
        if item["type"] in ("message", "reasoning"):
            part_type = "output_text" if item["type"] == "message" else "reasoning_text"
            part: dict[str, Any] = {"type": part_type, "text": ""}
            if part_type == "output_text":
                part["annotations"] = []
            item["content"] = [part]
            out += self._ev(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        return out

    def _close(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        index = len(self.output) - 1
        out = b""
        if item["type"] == "function_call":
            out += self._ev(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        else:
            part = item["content"][0]
            kind = "output_text" if item["type"] == "message" else "reasoning_text"
            out += self._ev(
                f"response.{kind}.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
            )
            out += self._ev(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        item["status"] = "completed"
        return out + self._ev("response.output_item.done", output_index=index, item=item)

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self.open is None or self.open["type"] != kind:
            item = (
                ra.message_item("", status="in_progress")
                if kind == "message"
                else ra.reasoning_item("")
            )
            out += self._open(item)
        current = self.output[-1]
        current["content"][0]["text"] += text
        name = "output_text" if kind == "message" else "reasoning_text"
        return out + self._ev(
            f"response.{name}.delta",
            item_id=current["id"],
            output_index=len(self.output) - 1,
            content_index=0,
            delta=text,
        )

    def _call(self, piece: dict[str, Any]) -> bytes:
        out = b""
        fn = piece.get("function") or {}
        if piece.get("id"):
            item = ra.call_item(piece["id"], fn.get("name") or "", "", status="in_progress")
            out += self._open(item)
        if self.open is None or self.open["type"] != "function_call":
            return out  # arguments without a call: nothing to attach them to
        args = fn.get("arguments") or ""
        if args:
            self.open["arguments"] += args
            out += self._ev(
                "response.function_call_arguments.delta",
                item_id=self.open["id"],
                output_index=len(self.output) - 1,
                delta=args,
            )
        return out

    # --- chat chunks in ------------------------------------------------------------------
    def chunk(self, chunk: dict[str, Any]) -> bytes:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = b""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                out += self._text("reasoning", reasoning)
            if delta.get("content"):
                out += self._text("message", delta["content"])
            for piece in delta.get("tool_calls") or []:
                out += self._call(piece)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> bytes:
        if self.failed:  # the error event ended the stream
            return b""
        out = self._close()
        status = "incomplete" if self.finish == "length" else "completed"
        return out + self._ev(f"response.{status}", response=self._response(status))

    def error(self, body: dict[str, Any]) -> bytes:
        err = body.get("error") or {}
        self.failed = True
        return self._ev("error", code=err.get("code"), message=err.get("message"), param=None)
