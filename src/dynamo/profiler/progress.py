"""A one-line progress bar on a terminal; plain log lines elsewhere (a Job's log, a pipe)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.done = max(1, total), 0
        self.tty = self.stream.isatty()
        self._started = time.monotonic()

    def __call__(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self._started
        if self.tty:
            filled = int(WIDTH * min(self.done, self.total) / self.total)
            bar = "#" * filled + "-" * (WIDTH - filled)
            line = f"\r[{bar}] {self.done}/{self.total} {elapsed:5.1f}s {what}"
            self.stream.write(line[:120].ljust(120))
        else:
            self.stream.write(f"[{self.done}/{self.total}] {what}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
