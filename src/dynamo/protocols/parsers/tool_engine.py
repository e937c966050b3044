"""The one incremental engine behind every tool-call family.

A family is data (`ToolFormat`): the blocks that hold calls (start marker, end marker or "to the
end of the output", whether the block may only open the output), markers to drop (section
wrappers) and a function that parses one block's body into calls. The engine streams content
up to a block, holds a block until it closes, then emits its calls; a block that does not parse
comes back as content, markers included. Whitespace right before a call and trailing whitespace
after the last call are dropped (the model's separators, not an answer).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from dynamo.protocols.parsers.base import (
    MalformedToolCall,
    ParsedCall,
    ToolCall,
    ToolCallDelta,
    ToolParseDelta,
    new_call_id,
)
from dynamo.protocols.parsers.json_scan import ObjectScanner, object_span
from dynamo.protocols.parsers.markers import MarkerSet

log = logging.getLogger(__name__)
BodyParser = Callable[[str], list[ParsedCall]]


@dataclass(frozen=True)
class Head:
    """A call's header: its name, the model's id for it, and where its arguments begin."""

    name: str
    id: str | None
    args_at: int


HeadParser = Callable[[str], Head | None]


@dataclass(frozen=True)
class Block:
    """Calls sit between `start` and `end` (None: up to the end of the output)."""

    start: str
    end: str | None
    at_start: bool = False  # only when the output (after whitespace) begins with `start`
    keep_start: bool = False  # `start` is part of the body (a bare `{` or `[`)


@dataclass(frozen=True)
class ToolFormat:
    name: str
    blocks: tuple[Block, ...]
    parse: BodyParser
    drop: tuple[str, ...] = ()
    head: HeadParser | None = None  # set when a call's arguments can stream


@dataclass
class _Streaming:
    """A call being sent while its block is open."""

    call_id: str
    name: str
    args_at: int  # index of the arguments' `{` in the body
    scanner: ObjectScanner = field(default_factory=ObjectScanner)
    sent: int = 0  # arguments characters sent


class MarkupToolParser:
    """`ToolCallParser` for one `ToolFormat`."""

    def __init__(self, fmt: ToolFormat, make_id: Callable[[], str] = new_call_id) -> None:
        self._fmt = fmt
        self._make_id = make_id
        self._anywhere = [b for b in fmt.blocks if not b.at_start]
        self._markers = MarkerSet([b.start for b in self._anywhere] + list(fmt.drop))
        self._ends = {b.end: MarkerSet([b.end]) for b in fmt.blocks if b.end is not None}
        self._buf = ""  # outside a block: text not yet emitted
        self._ws = ""  # whitespace held until we know whether a call follows
        self._block: Block | None = None
        self._body = ""
        self._at_start = any(b.at_start for b in fmt.blocks)
        self._calls: list[ToolCall] = []
        self._finished = False
        self._streaming: _Streaming | None = None
        self._no_stream = False  # this block's arguments are not a streamable object

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, text: str) -> ToolParseDelta:
        out = ToolParseDelta()
        if self._block is not None:
            self._body += text
        else:
            self._buf += text
        self._run(out)
        return out

    def finish(self) -> ToolParseDelta:
        out = ToolParseDelta()
        if self._finished:
            return out
        self._finished = True
        if self._block is not None:
            self._close_block(self._body, out)  # unterminated: parse what is there
        elif self._buf:
            self._content(self._buf, out)
            self._buf = ""
        if not self._calls and self._ws:
            out.content += self._ws
        self._ws = ""
        return out

    # --- the state machine -------------------------------------------------------------
    def _run(self, out: ToolParseDelta) -> None:
        while True:
            if self._block is not None:
                end = self._block.end
                if end is None:
                    self._stream(out, 0)
                    return  # runs to the end of the output
                j = self._body.find(end)
                if j < 0:
                    self._stream(out, self._ends[end].held_tail(self._body))
                    return
                rest = self._body[j + len(end) :]
                self._close_block(self._body[:j], out, end)
                self._buf = rest
                continue
            if self._at_start and not self._open_at_start():
                return  # only whitespace (or a partial marker) so far
            if self._block is not None:
                continue
            found = self._markers.earliest(self._buf)
            if found is None:
                keep = self._markers.held_tail(self._buf)
                self._content(self._buf[: len(self._buf) - keep], out)
                self._buf = self._buf[len(self._buf) - keep :]
                return
            i, marker = found
            self._content(self._buf[:i], out)
            rest = self._buf[i + len(marker) :]
            self._buf = ""
            block = next((b for b in self._anywhere if b.start == marker), None)
            if block is None:  # a dropped wrapper marker
                self._buf = rest
                continue
            self._block, self._body = block, rest

    def _open_at_start(self) -> bool:
        """At the output's start: open an `at_start` block if the text begins with one.
        False while undecided (whitespace or a prefix of a start marker)."""
        stripped = self._buf.lstrip()
        if not stripped:
            return False
        for b in self._fmt.blocks:
            if b.at_start and stripped.startswith(b.start):
                self._at_start = False
                self._ws += self._buf[: len(self._buf) - len(stripped)]
                body = stripped if b.keep_start else stripped[len(b.start) :]
                self._block, self._body, self._buf = b, body, ""
                return True
            if b.at_start and b.start.startswith(stripped):
                return False
        self._at_start = False
        return True

    def _close_block(self, body: str, out: ToolParseDelta, end: str = "") -> None:
        block = self._block
        if block is None:  # pragma: no cover - only called with a block open
            return
        self._block, self._body = None, ""
        streaming, self._streaming, self._no_stream = self._streaming, None, False
        if streaming is not None:
            self._close_streamed(streaming, body, out)
            return
        try:
            calls = self._fmt.parse(body)
            if not calls:
                raise MalformedToolCall("no call in the block")
        except MalformedToolCall:
            start = "" if block.keep_start else block.start
            self._content(start + body + end, out)
            return
        self._ws = ""
        if len(calls) == 1 and self._fmt.head is not None:
            calls = [self._as_written(calls[0], body)]
        for call in calls:
            index = len(self._calls)
            done = ToolCall(call.id or self._make_id(), call.name, call.arguments)
            self._calls.append(done)
            out.tool_calls.append(ToolCallDelta(index, done.id, done.name, ""))
            out.tool_calls.append(ToolCallDelta(index, arguments=done.arguments))

    # --- calls sent while the model writes them ------------------------------------------
    def _stream(self, out: ToolParseDelta, held: int) -> None:
        """Send what is sure of the open block's call; `held` tail characters may be markup."""
        if self._fmt.head is None or self._no_stream:
            return
        s = self._streaming
        if s is None:
            head = self._fmt.head(self._body)
            if head is None:
                return
            rest = self._body[head.args_at :]
            brace = len(rest) - len(rest.lstrip())
            if brace == len(rest):
                return  # the arguments have not begun
            if rest[brace] != "{":
                self._no_stream = True  # e.g. arguments written as a JSON string
                return
            s = _Streaming(head.id or self._make_id(), head.name, head.args_at + brace)
            self._streaming, self._ws = s, ""
            out.tool_calls.append(ToolCallDelta(len(self._calls), s.call_id, s.name, ""))
        args = self._body[s.args_at : len(self._body) - held]
        end = s.scanner.scan(args)
        upto = len(args) if end is None else end
        if upto > s.sent:
            out.tool_calls.append(ToolCallDelta(len(self._calls), arguments=args[s.sent : upto]))
            s.sent = upto

    def _close_streamed(self, s: _Streaming, body: str, out: ToolParseDelta) -> None:
        """The block of a call already begun closed: send the rest of its arguments. Sent
        text cannot be taken back, so a block that turns out malformed keeps what was sent
        (as OpenAI keeps the arguments of a call cut off by max_tokens)."""
        self._ws = ""
        args = object_span(body, s.args_at) or body[s.args_at :]
        try:
            calls = self._fmt.parse(body)
            ok = len(calls) == 1 and json.loads(args) == json.loads(calls[0].arguments)
        except (MalformedToolCall, ValueError):
            ok = False
        if not ok:
            args = args[: s.sent] if s.sent else "{}"
            log.warning("tool call %s: malformed after its arguments began to stream", s.name)
        if len(args) > s.sent:
            out.tool_calls.append(ToolCallDelta(len(self._calls), arguments=args[s.sent :]))
        self._calls.append(ToolCall(s.call_id, s.name, args))

    def _as_written(self, call: ParsedCall, body: str) -> ParsedCall:
        """The call with its arguments as the model wrote them, when they are that object."""
        head = self._fmt.head(body) if self._fmt.head else None
        if head is None:
            return call
        rest = body[head.args_at :].lstrip()
        written = object_span(rest, 0) if rest.startswith("{") else None
        if written is None or json.loads(call.arguments) != _loads(written):
            return call
        return ParsedCall(call.name, written, call.id)

    def _content(self, text: str, out: ToolParseDelta) -> None:
        if not text:
            return
        stripped = text.rstrip()
        if not stripped:
            self._ws += text
            return
        out.content += self._ws + stripped
        self._ws = text[len(stripped) :]


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None
