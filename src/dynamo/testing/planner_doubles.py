"""Planner test doubles: a connector that records what it is asked, a scripted metric source."""

from __future__ import annotations

from collections.abc import Mapping

from dynamo.planner.connectors.base import Role
from dynamo.planner.decide import Traffic
from dynamo.runtime.errors import DynamoError


class RecordingConnector:
    """A graph held in memory: `scale` sets the replicas at once and is recorded."""

    def __init__(self, replicas: Mapping[Role, int], error: DynamoError | None = None) -> None:
        self.replicas: dict[Role, int] = dict(replicas)
        self.calls: list[tuple[dict[Role, int], str]] = []
        self.error = error  # raised by every call when set

    async def live_replicas(self) -> dict[Role, int]:
        if self.error is not None:
            raise self.error
        return dict(self.replicas)

    async def scale(self, targets: Mapping[Role, int], reason: str) -> None:
        if self.error is not None:
            raise self.error
        self.calls.append((dict(targets), reason))
        self.replicas.update(targets)

    async def close(self) -> None:
        return None


class ScriptedSource:
    """Returns the next `Traffic` (or raises the next error) of its script on each call;
    `arrived()` returns the next of `arrivals` (None when there are none left)."""

    def __init__(
        self, script: list[Traffic | DynamoError], arrivals: list[float] | None = None
    ) -> None:
        self.script = list(script)
        self.arrivals = list(arrivals or [])

    async def start(self) -> None:
        return None

    async def traffic(self, interval_s: float) -> Traffic:
        item = self.script.pop(0)
        if isinstance(item, DynamoError):
            raise item
        return item

    async def arrived(self) -> float | None:
        return self.arrivals.pop(0) if self.arrivals else None

    async def close(self) -> None:
        return None
