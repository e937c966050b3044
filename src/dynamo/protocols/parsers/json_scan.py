"""Where a JSON object being streamed ends: a resumable scan that knows strings and escapes.

Tool-call arguments stream as the model writes them; the engine sends the text up to the
object's closing brace and no further (what follows is the family's markup).
"""

from __future__ import annotations


class ObjectScanner:
    """Feed it the text from an object's `{`; `end` is the index just past the matching `}`."""

    __slots__ = ("_depth", "_escape", "_in_string", "_pos", "end")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._pos = 0
        self.end: int | None = None

    def scan(self, text: str) -> int | None:
        """Scan `text` (the same growing text each call) from where the last call stopped."""
        i = self._pos
        while self.end is None and i < len(text):
            c = text[i]
            i += 1
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    self.end = i
        self._pos = i
        return self.end


def object_span(text: str, start: int) -> str | None:
    """The object that opens at `text[start]` as written, or None when it does not close."""
    end = ObjectScanner().scan(text[start:])
    return None if end is None else text[start : start + end]
