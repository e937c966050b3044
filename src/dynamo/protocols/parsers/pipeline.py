"""One choice's output through both parsers: reasoning first, then tool calls in the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

from dynamo.protocols.parsers.base import (
    ReasoningDelta,
    ReasoningParser,
    ToolCall,
    ToolCallDelta,
    ToolCallParser,
)


@dataclass
class OutputDelta:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls)


class OutputParser:
    """Either parser may be absent; with neither, text passes through as content."""

    def __init__(
        self, reasoning: ReasoningParser | None = None, tools: ToolCallParser | None = None
    ) -> None:
        self._reasoning = reasoning
        self._tools = tools

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self._tools.tool_calls if self._tools else []

    def feed(self, text: str) -> OutputDelta:
        step = self._reasoning.feed(text) if self._reasoning else ReasoningDelta(content=text)
        return self._tool_step(step, final=False)

    def finish(self) -> OutputDelta:
        step = self._reasoning.finish() if self._reasoning else ReasoningDelta()
        return self._tool_step(step, final=True)

    def _tool_step(self, step: ReasoningDelta, *, final: bool) -> OutputDelta:
        out = OutputDelta(reasoning=step.reasoning)
        if self._tools is None:
            out.content = step.content
            return out
        parsed = self._tools.feed(step.content) if step.content else None
        if parsed:
            out.content += parsed.content
            out.tool_calls += parsed.tool_calls
        if final:
            last = self._tools.finish()
            out.content += last.content
            out.tool_calls += last.tool_calls
        return out
