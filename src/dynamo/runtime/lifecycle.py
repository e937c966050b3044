"""Process lifecycle: run a component until SIGTERM/SIGINT, then drain and exit cleanly.

On a signal: unregister every endpoint (routers stop sending), refuse new requests, let
in-flight ones finish within `graceful_shutdown_grace_period_s`, close the planes and the
discovery lease, and return exit code 0. When a registered health check fails (a dead engine)
the same shutdown runs and the exit code is 1, so that the engine's pod is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry

from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import DynamoError

log = logging.getLogger(__name__)
T = TypeVar("T")
Main = Callable[[DistributedRuntime], Awaitable[None]]


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on uvloop when it is installed, else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run_until_signal(
    main: Main,
    config: RuntimeConfig | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
) -> int:
    """Create the runtime, run `main(runtime)`, serve until a signal; return the exit code.

    `main` may return once its endpoints are served (the process keeps serving) or run
    forever; it is cancelled after the drain. An exception from `main` gives exit code 1.
    """
    return run_async(serve_until_signal(main, config or resolve(RuntimeConfig), registry=registry))


async def serve_until_signal(
    main: Main,
    config: RuntimeConfig,
    *,
    registry: CollectorRegistry = REGISTRY,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """The async body of `run_until_signal` (for callers that own the loop)."""
    try:
        runtime = await DistributedRuntime.create(config)
    except DynamoError as exc:
        log.error("cannot start the runtime: %s", exc)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info(
                "%s received: draining (grace %.1fs)",
                sig.name,
                config.graceful_shutdown_grace_period_s,
            )
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    runtime.metrics_registry = registry
    exit_code = 0
    main_task: asyncio.Task[None] | None = None
    stopper = asyncio.create_task(stop.wait(), name="signal")
    unhealthy = asyncio.create_task(runtime.health.failed.wait(), name="unhealthy")
    try:
        if config.system_port is not None:
            # Before main: a worker's card names this server, and probes may come early.
            await runtime.start_system_server(config.system_port)
        main_task = asyncio.create_task(_as_coroutine(main(runtime)), name="main")
        waiting = {main_task, stopper, unhealthy}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if main_task.done() and not stopper.done() and not unhealthy.done():
            error = _exception_of(main_task)
            if isinstance(error, DynamoError):  # an expected failure: one line, no traceback
                exit_code = 1
                log.error("%s", error)
            elif main_task.cancelled() or error is not None:
                exit_code = 1
                log.error("main failed; shutting down", exc_info=error)
            else:  # main set things up and returned: serve until signalled or unhealthy
                await asyncio.wait({stopper, unhealthy}, return_when=asyncio.FIRST_COMPLETED)
        if unhealthy.done() and not stopper.done() and exit_code == 0:
            exit_code = 1
            failure = runtime.health.failure
            log.error(
                "%s failed its health check (%s): deregistering and exiting",
                failure.check if failure else "an engine",
                failure.reason if failure else "unknown",
            )
    finally:
        await runtime.shutdown(config.graceful_shutdown_grace_period_s)
        for task in (main_task, stopper, unhealthy):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sig in signals:
            loop.remove_signal_handler(sig)
    return exit_code


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


def _exception_of(task: asyncio.Task[None]) -> BaseException | None:
    return None if task.cancelled() else task.exception()
