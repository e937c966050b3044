"""Reasoning parsers: text between a start and an end marker is reasoning, the rest content.

Every family is one `ThinkFormat`. `starts_in_reasoning` is for models whose chat template
already opened the block in the prompt (DeepSeek-R1): their output is reasoning until the end
marker, and a block cut off by `max_tokens` is all reasoning. Markers in `drop` (harmony's
headers) are removed from both streams.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamo.protocols.parsers.base import ReasoningDelta
from dynamo.protocols.parsers.markers import MarkerSet


@dataclass(frozen=True)
class ThinkFormat:
    name: str
    start: str
    end: str
    starts_in_reasoning: bool = False
    drop: tuple[str, ...] = ()


THINK = ("<think>", "</think>")
FORMATS = {
    f.name: f
    for f in (
        ThinkFormat("basic", *THINK),
        ThinkFormat("deepseek_r1", *THINK, starts_in_reasoning=True),
        ThinkFormat("qwen3", *THINK),
        ThinkFormat("glm45", *THINK),
        ThinkFormat("kimi", "◁think▷", "◁/think▷"),
        ThinkFormat("mistral", "[THINK]", "[/THINK]"),
        ThinkFormat("granite", "Here is my thought process:", "Here is my response:"),
        ThinkFormat(
            "gpt_oss",
            "<|channel|>analysis<|message|>",
            "<|end|>",
            drop=("<|start|>assistant", "<|channel|>final<|message|>", "<|return|>"),
        ),
    )
}


class ThinkParser:
    """`ReasoningParser` for one `ThinkFormat`."""

    def __init__(self, fmt: ThinkFormat) -> None:
        self._fmt = fmt
        self._in_reasoning = fmt.starts_in_reasoning
        # In reasoning a repeated start marker is dropped (R1 may echo the prompt's <think>);
        # in content an end marker is plain text.
        self._reasoning_markers = MarkerSet([fmt.start, fmt.end, *fmt.drop])
        self._content_markers = MarkerSet([fmt.start, *fmt.drop])
        self._buf = ""
        self._finished = False

    def feed(self, text: str) -> ReasoningDelta:
        out = ReasoningDelta()
        self._buf += text
        while True:
            markers = self._reasoning_markers if self._in_reasoning else self._content_markers
            found = markers.earliest(self._buf)
            if found is None:
                keep = markers.held_tail(self._buf)
                self._emit(self._buf[: len(self._buf) - keep], out)
                self._buf = self._buf[len(self._buf) - keep :]
                return out
            i, marker = found
            self._emit(self._buf[:i], out)
            self._buf = self._buf[i + len(marker) :]
            if marker == self._fmt.start and not self._in_reasoning:
                self._in_reasoning = True
            elif marker == self._fmt.end and self._in_reasoning:
                self._in_reasoning = False

    def finish(self) -> ReasoningDelta:
        out = ReasoningDelta()
        if not self._finished:
            self._finished = True
            self._emit(self._buf, out)
            self._buf = ""
        return out

    def _emit(self, text: str, out: ReasoningDelta) -> None:
        if self._in_reasoning:
            out.reasoning += text
        else:
            out.content += text
