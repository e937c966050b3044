"""The discovery interface every backend implements.

Keys are `/`-separated paths; values are JSON-able dicts. Every key a process puts is tied to
that process's lease: when the process dies (also on kill -9) or closes its discovery, its keys
disappear and watchers receive `delete` events.

Key layout used by the runtime:
  v1/instances/{namespace}/{component}/{endpoint}/{instance_id:x}  -> InstanceInfo dict
  v1/mdc/{namespace}/{component}/{endpoint}/{instance_id:x}        -> ModelCard dict
  v1/events/{namespace}/{instance_id:x}                            -> event publisher address
  v1/frontends/{namespace}/{instance_id:x}                         -> {"url", "metrics_url"}
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

INSTANCES_ROOT = "v1/instances"
MODEL_CARDS_ROOT = "v1/mdc"
EVENT_PUBLISHERS_ROOT = "v1/events"
FRONTENDS_ROOT = "v1/frontends"  # HTTP frontends, so the planner can scrape their /metrics


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: dict[str, Any] | None  # None on delete


def notify_changes(
    old: Mapping[str, dict[str, Any]],
    new: Mapping[str, dict[str, Any]],
    watchers: Iterable[tuple[str, asyncio.Queue[WatchEvent]]],
) -> None:
    """Send every difference between two views of the store to the watchers of its prefix."""
    events = [WatchEvent("delete", k, None) for k in old if k not in new]
    events += [WatchEvent("put", k, v) for k, v in new.items() if old.get(k) != v]
    if not events:
        return
    watchers = list(watchers)
    for event in events:
        for prefix, queue in watchers:
            if event.key.startswith(prefix):
                queue.put_nowait(event)


class Discovery(Protocol):
    """A key-value registry with per-process leases and prefix watches."""

    async def start(self) -> None:
        """Connect and grant this process's lease (keep-alive runs until `close`)."""

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """Create or replace `key`, attached to this process's lease."""

    async def delete(self, key: str) -> None:
        """Remove `key` now (idempotent)."""

    async def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every live key under `prefix` with its value."""

    def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """Yield a `put` for every existing key, then every change, until the iterator closes."""

    async def close(self) -> None:
        """Revoke the lease: every key of this process disappears."""
