"""`--router-replica-sync`: share active-sequence changes between router replicas.

Each KV policy reports its add / prefill-done / free changes through a callback;
`ReplicaSync` publishes them on `{ns}.{router component}.active_sequences_events` and applies
the changes of other replicas to its attached policies. Fire-and-forget, like Dynamo: a new
replica starts empty and converges as requests come and go.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from dynamo.router.active_sequences import ACTIVE_SEQUENCES_TOPIC, ActiveSequenceEvent
from dynamo.runtime.tasks import cancel_and_wait
from dynamo.runtime.transport.base import EventPublisher

log = logging.getLogger(__name__)

MAX_PENDING = 65_536  # changes waiting for the event plane before new ones are dropped


def replica_sync_topic(namespace: str, router_component: str) -> str:
    return f"{namespace}.{router_component}.{ACTIVE_SEQUENCES_TOPIC}"


class SyncedPolicy(Protocol):
    """What replica sync needs of a policy (`KvPolicy`)."""

    router_id: str

    def set_sync_publisher(self, publish: Any) -> None: ...

    def apply_sync_event(self, event: ActiveSequenceEvent) -> None: ...


class SyncRuntime(Protocol):
    async def event_publisher(self) -> EventPublisher: ...

    async def event_subscriber(self, topic_prefix: str) -> Any: ...


@dataclass(slots=True)
class ReplicaSyncStats:
    published: int = 0
    applied: int = 0  # changes of other replicas handed to the attached policies
    dropped: int = 0  # not published: too many pending
    malformed: int = 0


class ReplicaSync:
    """Carries `ActiveSequenceEvent`s between replicas; see the module docstring.

    `attach(policy)` wires both directions for one policy (a frontend attaches one per
    model; the standalone router its only one); `start(runtime)` opens the event plane.
    """

    def __init__(self, topic: str, *, max_pending: int = MAX_PENDING) -> None:
        self.topic = topic
        self.stats = ReplicaSyncStats()
        self._policies: dict[str, SyncedPolicy] = {}
        self._pending: asyncio.Queue[ActiveSequenceEvent] = asyncio.Queue(max_pending)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        """Changes queued for the event plane."""
        return self._pending.qsize()

    def attach(self, policy: SyncedPolicy) -> None:
        self._policies[policy.router_id] = policy
        policy.set_sync_publisher(self.publish)

    def detach(self, policy: SyncedPolicy) -> None:
        if self._policies.pop(policy.router_id, None) is not None:
            policy.set_sync_publisher(None)

    def publish(self, event: ActiveSequenceEvent) -> None:
        """The policies' callback: queue the change for the event plane (never blocks)."""
        try:
            self._pending.put_nowait(event)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 10_000 == 0:
                log.warning(
                    "replica sync: event plane behind, %d changes dropped", self.stats.dropped
                )

    def apply(self, payload: dict[str, Any]) -> None:
        """Apply one received change to every attached policy (not to the one that sent it)."""
        try:
            event = ActiveSequenceEvent.from_wire(payload)
        except Exception as exc:  # whatever a publisher sends must not stop the sync
            self.stats.malformed += 1
            log.warning("replica sync: dropped a malformed event: %r", exc)
            return
        if event.router_id in self._policies:
            return
        self.stats.applied += 1
        for policy in self._policies.values():
            policy.apply_sync_event(event)

    async def start(self, runtime: SyncRuntime) -> None:
        publisher = await runtime.event_publisher()
        subscriber = await runtime.event_subscriber(self.topic)
        self._tasks = [
            asyncio.create_task(self._send(publisher), name="replica-sync publish"),
            asyncio.create_task(self._receive(subscriber), name="replica-sync receive"),
        ]

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def _send(self, publisher: EventPublisher) -> None:
        while True:
            event = await self._pending.get()
            try:
                await publisher.publish(self.topic, event.to_wire())
                self.stats.published += 1
            except Exception:  # the event plane being down must not stop routing
                log.exception("replica sync: publishing failed")

    async def _receive(self, subscriber: Any) -> None:
        try:
            async for topic, payload in subscriber:
                if topic == self.topic:
                    self.apply(payload)
        finally:
            close = getattr(subscriber, "close", None)
            if close is not None:
                await close()
