"""Finding markers in streamed text: the earliest one, and how much of a tail to hold back.

A `MarkerSet` is built once per parser state; its first-character regex lets prose (text with
no character that starts a marker) through with one C-level search per chunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class MarkerSet:
    __slots__ = ("_firsts", "_window", "markers")

    def __init__(self, markers: Sequence[str]) -> None:
        self.markers = tuple(m for m in markers if m)
        self._window = max((len(m) for m in self.markers), default=1) - 1
        firsts = sorted({m[0] for m in self.markers})
        self._firsts = (
            re.compile("[" + "".join(re.escape(c) for c in firsts) + "]") if firsts else None
        )

    def earliest(self, text: str) -> tuple[int, str] | None:
        """(index, marker) of the first marker in `text`; at one index the longest wins.

        None as well while the text from that index could still grow into a longer marker
        (`<|start|>assistant` vs `<|start|>assistant to=`): `held_tail` then holds it back.
        """
        if self._firsts is None or self._firsts.search(text) is None:
            return None
        best: tuple[int, str] | None = None
        for m in self.markers:
            i = text.find(m)
            if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(m) > len(best[1]))):
                best = (i, m)
        if best is not None:
            tail = text[best[0] :]
            if any(len(m) > len(tail) and m.startswith(tail) for m in self.markers):
                return None
        return best

    def held_tail(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some marker: it
        may become a marker with the next chunk, so it cannot be emitted yet."""
        if self._firsts is None:
            return 0
        start = max(0, len(text) - self._window)
        found = self._firsts.search(text, start)
        while found is not None:
            tail = text[found.start() :]
            if any(len(m) > len(tail) and m.startswith(tail) for m in self.markers):
                return len(tail)
            found = self._firsts.search(text, found.start() + 1)
        return 0
