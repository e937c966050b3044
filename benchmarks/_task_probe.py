"""Run `python -m MODULE ARGS...` and write its live asyncio task count to a file every second.

    python benchmarks/_task_probe.py OUT_FILE MODULE [ARGS...]

The soak benchmark starts the frontend and the mocker through this wrapper so it can compare
their task counts at the start and at the end without touching their code. The event loop is
caught when it is created (by `asyncio.run` whatever the policy, or by `uvloop.new_event_loop`);
a daemon thread counts `asyncio.all_tasks(loop)` (a retry covers the set changing meanwhile).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib
import os
import runpy
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_loops: list[asyncio.AbstractEventLoop] = []


def _recording(factory: Callable[[], asyncio.AbstractEventLoop]) -> Callable[[], Any]:
    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = factory()
        _loops.append(loop)
        return loop

    return new_event_loop


def _report(path: str) -> None:
    while True:
        time.sleep(1.0)
        counts = []
        for loop in list(_loops):
            if loop.is_closed():
                continue
            try:
                counts.append(len(asyncio.all_tasks(loop)))
            except RuntimeError:  # the task set changed under us; next second
                continue
        tmp = f"{path}.tmp"
        with open(tmp, "w") as out:
            out.write(str(sum(counts)))
        os.replace(tmp, path)


def main() -> None:
    out_file, module, *args = sys.argv[1:]
    # asyncio.run creates its loop through asyncio.events; the runtime's Runner through uvloop
    asyncio.events.new_event_loop = asyncio.new_event_loop = _recording(asyncio.new_event_loop)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.new_event_loop = _recording(uvloop.new_event_loop)
    threading.Thread(target=_report, args=(out_file,), daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
