"""Run workers as a process: register, serve until a signal, drain, exit with a clear status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import DynamoError
from dynamo.runtime.lifecycle import run_until_signal
from dynamo.worker.core import Worker
from dynamo.worker.metrics import ComponentMetrics

log = logging.getLogger(__name__)

BuildWorkers = Callable[[DistributedRuntime, ComponentMetrics], list[Worker]]


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def run_workers(prog: str, runtime_config: RuntimeConfig, build: BuildWorkers) -> None:
    """Start the workers `build` makes, serve until SIGTERM/SIGINT, drain, then exit.

    Exit status: 0 after a clean drain, 1 when serving failed, 2 on a configuration error
    (printed as one line, no traceback).
    """
    registry = CollectorRegistry()
    metrics = ComponentMetrics(registry)

    async def serve(runtime: DistributedRuntime) -> None:
        workers = build(runtime, metrics)
        try:
            await asyncio.gather(*(w.start() for w in workers))
            await asyncio.Event().wait()  # serve until the drain cancels us
        finally:
            for worker in workers:
                with contextlib.suppress(Exception):
                    await worker.stop()

    try:
        code = run_until_signal(serve, runtime_config, registry=registry)
    except DynamoError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
