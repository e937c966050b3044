"""Worker load for the planner: the `kv_metrics` every worker publishes on the event plane.

`WorkerLoads` keeps the latest `LoadMetrics` of each worker (dp rank) of the namespace and
sums them per role: the `prefill` component is the prefill role, every other worker
component the decode (or aggregated) role. A worker that stopped publishing (scaled down,
dead) drops out after `stale_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from dynamo.planner.connectors.base import Role
from dynamo.planner.decide import RoleLoad
from dynamo.protocols.kv_events import KV_METRICS_TOPIC, LoadMetrics
from dynamo.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PREFILL_COMPONENT = "prefill"
STALE_S = 10.0


def role_of(component: str) -> Role:
    return "prefill" if component == PREFILL_COMPONENT else "decode"


class WorkerLoads:
    def __init__(self, stale_s: float = STALE_S, clock: Callable[[], float] = time.monotonic):
        self._stale_s = stale_s
        self._clock = clock
        # (component, worker id, dp rank) -> (received at, metrics)
        self._latest: dict[tuple[str, int, int], tuple[float, LoadMetrics]] = {}
        self._task: asyncio.Task[None] | None = None

    def observe(self, topic: str, payload: dict[str, Any]) -> None:
        """Record one `{namespace}.{component}.kv_metrics` message (others are ignored)."""
        parts = topic.split(".")
        if len(parts) < 3 or parts[-1] != KV_METRICS_TOPIC:
            return
        load = LoadMetrics.from_wire(payload)
        self._latest[(parts[-2], load.worker_id, load.dp_rank)] = (self._clock(), load)

    def snapshot(self) -> dict[Role, RoleLoad]:
        """Per role: reporting workers, mean queued prefill tokens, mean KV usage, how many
        workers hold queued prompt tokens, and mean running requests."""
        now = self._clock()
        for key in [k for k, (at, _) in self._latest.items() if now - at > self._stale_s]:
            del self._latest[key]
        grouped: dict[Role, list[LoadMetrics]] = {}
        for (component, _, _), (_, load) in self._latest.items():
            grouped.setdefault(role_of(component), []).append(load)
        return {
            role: RoleLoad(
                workers=len(loads),
                queued_prefill_tokens=sum(m.active_prefill_tokens for m in loads) / len(loads),
                kv_usage=sum(m.gpu_cache_usage_perc for m in loads) / len(loads),
                queued_workers=sum(1 for m in loads if m.active_prefill_tokens > 0),
                running_requests=sum(m.request_active_slots for m in loads) / len(loads),
            )
            for role, loads in grouped.items()
        }

    def start(self, subscriber: Any) -> None:
        """Consume `subscriber` (an event-plane subscriber to the namespace) in a task."""
        self._task = asyncio.create_task(self._pump(subscriber), name="planner-worker-loads")

    async def _pump(self, subscriber: Any) -> None:
        try:
            async for topic, payload in subscriber:
                try:
                    self.observe(topic, payload)
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    log.warning("dropped a malformed load message on %s: %r", topic, exc)
        finally:
            close = getattr(subscriber, "close", None)
            if close is not None:
                await close()

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
