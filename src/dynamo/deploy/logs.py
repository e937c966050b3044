"""Log output of the local runner: every child line prefixed (and coloured) with its replica.

`Frontend-0      | INFO listening on :8000`; the runner's own lines use the `serve` prefix.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Literal, TextIO

ColorMode = Literal["auto", "always", "never"]
# ANSI foreground colours that read well on dark and light terminals.
PALETTE = (36, 33, 35, 32, 34, 91, 96, 93, 95, 92, 94)
RUNNER_PREFIX = "serve"
_RESET = "\x1b[0m"


def use_color(mode: ColorMode | str, stream: TextIO) -> bool:
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


class LogPrinter:
    """Writes prefixed lines to one stream; prefixes are padded to a common width."""

    def __init__(
        self,
        services: Sequence[str],
        *,
        stream: TextIO | None = None,
        color: ColorMode | str = "auto",
        width: int | None = None,
    ) -> None:
        self.stream = stream or sys.stdout
        self.color = use_color(color, self.stream)
        self._colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(services)}
        self.width = width or max([len(RUNNER_PREFIX), *(len(s) + 3 for s in services)])

    def _prefix(self, label: str, service: str | None) -> str:
        text = f"{label:<{self.width}} | "
        if not self.color:
            return text
        code = self._colors.get(service or "", 1)  # runner lines in bold
        return f"\x1b[{code}m{text}{_RESET}"

    def line(self, label: str, text: str, *, service: str | None = None) -> None:
        self.stream.write(self._prefix(label, service) + text.rstrip("\r\n") + "\n")
        self.stream.flush()

    def runner(self, text: str) -> None:
        self.line(RUNNER_PREFIX, text)


def replica_label(service: str, index: int) -> str:
    return f"{service}-{index}"


async def pump_lines(
    reader: asyncio.StreamReader, printer: LogPrinter, label: str, service: str
) -> None:
    """Copy a child's output to `printer` line by line until EOF (over-long lines are split)."""
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                printer.line(label, exc.partial.decode(errors="replace"), service=service)
            return
        except asyncio.LimitOverrunError as exc:
            raw = await reader.readexactly(exc.consumed)
        printer.line(label, raw.decode(errors="replace"), service=service)
