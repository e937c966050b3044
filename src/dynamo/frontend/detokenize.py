"""Incremental detokenization and stop-string matching for streamed token ids.

`TextStream` turns each batch of new token ids into the text to send now. It never splits a
multi-byte character (the HF `DecodeStream` holds bytes back until they form valid UTF-8) and
never sends any part of a stop string: text that could be the start of one is held back until
the next tokens show whether it is.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from time import perf_counter

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

# Prompt tokens given to the decoder as context, so that the first generated token decodes
# as it would mid-sentence (e.g. SentencePiece's leading-space marker).
_CONTEXT_TOKENS = 4
# One push in this many is timed for `tokenizer_latency_ms{operation="detokenize"}`.
_TIMING_EVERY = 16


class StopMatcher:
    """Finds the first stop string in a text stream; emits only text that cannot start one."""

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add `text`; return (text safe to emit now, whether a stop string was reached)."""
        buf = self._held + text
        first = -1
        for stop in self._stops:
            i = buf.find(stop)
            if i != -1 and (first == -1 or i < first):
                first = i
        if first != -1:
            self._held = ""
            return buf[:first], True
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:k]):
                    hold = k
                    break
        if hold:
            self._held = buf[-hold:]
            return buf[:-hold], False
        self._held = ""
        return buf, False

    def flush(self) -> str:
        """The held-back text, at the end of the stream (it turned out not to be a stop)."""
        held, self._held = self._held, ""
        return held


class TextStream:
    """New token ids in, text deltas out, for one response."""

    __slots__ = (
        "_decoder",
        "_drop",
        "_pushes",
        "_stops",
        "_tokenizer",
        "stopped",
        "timed_n",
        "timed_s",
    )

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        stop: Sequence[str] = (),
        prompt_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
        drop_ids: Collection[int] = (),
    ) -> None:
        """`skip_special_tokens=False` keeps special tokens in the text (output parsers read
        markers such as harmony's `<|channel|>`); `drop_ids` (EOS) are never decoded."""
        context = list(prompt_ids[-_CONTEXT_TOKENS:]) if prompt_ids else None
        self._tokenizer = tokenizer
        self._decoder = DecodeStream(ids=context, skip_special_tokens=skip_special_tokens)
        self._stops = StopMatcher(stop) if stop else None
        self._drop = frozenset(drop_ids)
        self.stopped = False  # a stop string was reached: send nothing more
        self._pushes = 0
        self.timed_s = 0.0  # time spent in the timed decoder steps (a sample of them)
        self.timed_n = 0

    def push(self, token_ids: list[int]) -> str:
        """Text to emit for these new tokens ('' when held back or after a stop string)."""
        if self._drop:
            token_ids = [t for t in token_ids if t not in self._drop]
        if self.stopped or not token_ids:
            return ""
        ids: int | list[int] = token_ids[0] if len(token_ids) == 1 else token_ids
        n = self._pushes
        self._pushes = n + 1
        if n % _TIMING_EVERY:
            text = self._decoder.step(self._tokenizer, ids)
        else:  # a sample: timing every step would cost as much as a cheap step
            start = perf_counter()
            text = self._decoder.step(self._tokenizer, ids)
            self.timed_s += perf_counter() - start
            self.timed_n += 1
        if text is None:
            return ""
        if self._stops is None:
            return text
        out, self.stopped = self._stops.feed(text)
        return out

    def mean_step_ms(self) -> float | None:
        """Mean time of a timed decoder step, in ms (None before the first push)."""
        return 1000 * self.timed_s / self.timed_n if self.timed_n else None

    def finish(self) -> str:
        """Text still held back when the stream ends normally."""
        if self._stops is None or self.stopped:
            return ""
        return self._stops.flush()
