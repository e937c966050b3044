"""Finding markers in streamed text: the earliest one, and how much of a tail to hold back."""

from __future__ import annotations

from collections.abc import Sequence


def earliest(text: str, markers: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """(index, marker) of the first marker in `text[start:]`; at one index the longest wins.

    None as well while the text from that index could still grow into a longer marker
    (`<|start|>assistant` vs `<|start|>assistant to=`): `held_tail` then holds it back.
    """
    best: tuple[int, str] | None = None
    for m in markers:
        i = text.find(m, start)
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(m) > len(best[1]))):
            best = (i, m)
    if best is not None:
        tail = text[best[0] :]
        if any(len(m) > len(tail) and m.startswith(tail) for m in markers):
            return None
    return best


def held_tail(text: str, markers: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some marker: it may
    become a marker with the next chunk, so it cannot be emitted yet."""
    longest = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), longest, -1):
            if text.endswith(m[:n]):
                longest = n
                break
    return longest
