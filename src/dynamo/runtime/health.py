"""Health checks a process registers (a worker: its engine's), asked by the status server's
`/health` and by a watchdog that stops the process once one fails: a dead engine must not keep
receiving traffic.

A check is an async callable returning None while healthy, else why not (one line). A failure
is sticky: the engine behind it does not come back, the process is restarted instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Unhealthy:
    """Which check failed and why."""

    check: str
    reason: str


class HealthChecks:
    """The registered checks of one process and the first failure any of them reported."""

    def __init__(self, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self._checks: dict[str, HealthCheck] = {}
        self._timeout_s = timeout_s
        self.failure: Unhealthy | None = None
        self.failed = asyncio.Event()

    def add(self, name: str, check: HealthCheck) -> None:
        self._checks[name] = check

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    def __len__(self) -> int:
        return len(self._checks)

    async def _ask(self, name: str, check: HealthCheck) -> str | None:
        try:
            async with asyncio.timeout(self._timeout_s):  # not wait_for: see runtime.tasks
                return await check()
        except TimeoutError:
            return f"health check did not answer in {self._timeout_s:g} s"
        except Exception as exc:  # a check that breaks says nothing good about its engine
            return f"health check failed: {type(exc).__name__}: {exc}"

    async def check(self) -> Unhealthy | None:
        """Run every check; the first failure (kept from then on), or None."""
        if self.failure is not None:
            return self.failure
        for name, check in list(self._checks.items()):
            reason = await self._ask(name, check)
            if reason is not None and self.failure is None:
                self.failure = Unhealthy(name, reason)
                log.error("%s is unhealthy: %s", name, reason)
                self.failed.set()
        return self.failure

    async def watch(self, interval_s: float) -> Unhealthy:
        """Check every `interval_s` until a check fails; return the failure."""
        while True:
            failure = await self.check()
            if failure is not None:
                return failure
            await asyncio.sleep(interval_s)
