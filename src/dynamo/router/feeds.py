"""Feed a routing policy from the runtime: its workers, their KV events and their load.

`EndpointWorkers` keeps one policy's workers equal to the instances of one endpoint that have
a model card (or, without a card, when a router-wide block size is set), and pumps the
component's `kv-events` / `kv_metrics` topics into it. `dispatch_worker_event` and
`pump_worker_events` are the event half alone, for callers (the frontend) that route one
namespace's events to several policies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from pydantic import ValidationError

from dynamo.protocols.kv_events import KV_EVENTS_TOPIC, KV_METRICS_TOPIC, LoadMetrics, RouterEvent
from dynamo.protocols.model_card import ModelCard
from dynamo.router.base import RoutingPolicy, WorkerInfo
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.discovery.base import MODEL_CARDS_ROOT, WatchEvent
from dynamo.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PolicyOf = Callable[[int], RoutingPolicy | None]


class InstanceClient(Protocol):
    """What the feed uses of the runtime's `EndpointClient`."""

    async def start(self) -> None: ...

    def instance_ids(self) -> list[int]: ...

    def on_change(self, callback: Callable[[str, int], None]) -> None: ...

    async def close(self) -> None: ...


class FeedRuntime(Protocol):
    """What the feed uses of `DistributedRuntime`."""

    def client(self, address: EndpointAddress) -> Any: ...

    def watch_model_cards(self, namespace: str | None = None) -> AsyncIterator[WatchEvent]: ...

    async def event_subscriber(self, topic_prefix: str) -> Any: ...


def worker_events_prefix(namespace: str | None, component: str | None = None) -> str:
    """The topic prefix of the KV events and load metrics of `namespace.component`'s workers.

    Without a component: every component of `namespace`; without a namespace: every worker.
    """
    if not namespace:
        return ""
    return f"{namespace}.{component}." if component else f"{namespace}."


def worker_info_from_card(instance_id: int, card: ModelCard) -> WorkerInfo:
    return WorkerInfo(
        instance_id=instance_id,
        kv_block_size=card.kv_block_size,
        total_kv_blocks=card.total_kv_blocks,
        data_parallel_size=card.data_parallel_size,
    )


def dispatch_worker_event(
    topic: str, payload: dict[str, Any], policy_of: PolicyOf, *, kv_events: bool = True
) -> bool:
    """Hand a `kv-events` or `kv_metrics` payload to the policy of the worker that sent it.

    Returns whether a policy took it; other topics, and KV events when `kv_events` is off, are
    ignored (undecoded). A malformed payload raises (KeyError, ValueError, TypeError,
    AttributeError).
    """
    kind = topic.rsplit(".", 1)[-1]
    if kind == KV_EVENTS_TOPIC and kv_events:
        event = RouterEvent.from_wire(payload)
        policy = policy_of(event.worker_id)
        if policy is not None:
            policy.apply_kv_event(event)
            return True
    elif kind == KV_METRICS_TOPIC:
        load = LoadMetrics.from_wire(payload)
        policy = policy_of(load.worker_id)
        if policy is not None:
            policy.apply_load(load)
            return True
    return False


async def pump_worker_events(
    subscriber: Any, policy_of: PolicyOf, *, kv_events: bool = True
) -> None:
    """Dispatch every message of `subscriber` until it ends or the task is cancelled; then
    close it. A malformed message is logged and skipped."""
    try:
        async for topic, payload in subscriber:
            try:
                dispatch_worker_event(topic, payload, policy_of, kv_events=kv_events)
            except Exception as exc:  # whatever a publisher sends must not stop the feed
                log.warning("dropped a malformed worker event on %s: %r", topic, exc)
    finally:
        close = getattr(subscriber, "close", None)
        if close is not None:
            await close()


class EndpointWorkers:
    """The workers of one endpoint, kept in `policy`; see the module docstring.

    A worker is routable once its instance is registered and its model card is known; with
    `block_size_override` (the router's `--kv-cache-block-size`) a card is not required.
    """

    def __init__(
        self,
        runtime: FeedRuntime,
        address: EndpointAddress,
        policy: RoutingPolicy,
        *,
        block_size_override: int | None = None,
    ) -> None:
        self.address = address
        self.policy = policy
        self._runtime = runtime
        self._override = block_size_override
        self._card_prefix = f"{MODEL_CARDS_ROOT}/{address.path}/"
        self._cards: dict[int, ModelCard] = {}
        self._live: set[int] = set()
        self._routed: dict[int, WorkerInfo] = {}
        self._client: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def client(self) -> Any:
        """The endpoint client (instance addresses, `generate`); set by `start`."""
        if self._client is None:
            raise RuntimeError("EndpointWorkers.start() has not run")
        return self._client

    def workers(self) -> list[WorkerInfo]:
        return [self._routed[i] for i in sorted(self._routed)]

    def info(self, instance_id: int) -> WorkerInfo | None:
        return self._routed.get(instance_id)

    async def start(self) -> None:
        """Subscribe to the worker events first (so none are missed), then follow discovery."""
        prefix = worker_events_prefix(self.address.namespace, self.address.component)
        subscriber = await self._runtime.event_subscriber(prefix)
        self._spawn(pump_worker_events(subscriber, lambda _wid: self.policy), "worker-events")
        client = self._runtime.client(self.address)
        await client.start()
        self._client = client
        client.on_change(self._on_instance)
        for instance_id in client.instance_ids():
            self._on_instance("add", instance_id)
        self._spawn(self._watch_cards(), "model-card-watch")

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._client is not None:
            await self._client.close()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{name} {self.address}"))

    # --- discovery -------------------------------------------------------------------------
    def _on_instance(self, kind: str, instance_id: int) -> None:
        if kind == "add":
            self._live.add(instance_id)
        else:
            self._live.discard(instance_id)
        self._refresh(instance_id)

    async def _watch_cards(self) -> None:
        async for event in self._runtime.watch_model_cards(self.address.namespace):
            self.apply_card_event(event)

    def apply_card_event(self, event: WatchEvent) -> None:
        """Take one model-card watch event (cards of other endpoints are ignored)."""
        if not event.key.startswith(self._card_prefix):
            return
        try:
            instance_id = int(event.key[len(self._card_prefix) :], 16)
        except ValueError:
            log.warning("ignoring model card with a non-hex instance id: %s", event.key)
            return
        if event.kind == "delete" or event.value is None:
            self._cards.pop(instance_id, None)
        else:
            try:
                self._cards[instance_id] = ModelCard.model_validate(event.value)
            except ValidationError as exc:
                log.warning("ignoring invalid model card at %s: %s", event.key, exc)
                self._cards.pop(instance_id, None)
        self._refresh(instance_id)

    def _refresh(self, instance_id: int) -> None:
        wanted = self._wanted(instance_id)
        current = self._routed.get(instance_id)
        if wanted == current:
            return
        if wanted is None:
            del self._routed[instance_id]
            self.policy.remove_worker(instance_id)
            log.info("%s: worker %x left", self.address, instance_id)
        else:
            self._routed[instance_id] = wanted
            self.policy.add_worker(wanted)
            if current is None:
                log.info(
                    "%s: worker %x added (block size %d, dp size %d)",
                    self.address,
                    instance_id,
                    wanted.kv_block_size,
                    wanted.data_parallel_size,
                )

    def _wanted(self, instance_id: int) -> WorkerInfo | None:
        if instance_id not in self._live:
            return None
        card = self._cards.get(instance_id)
        if card is not None:
            return worker_info_from_card(instance_id, card)
        if self._override is not None:
            return WorkerInfo(instance_id=instance_id, kv_block_size=self._override)
        return None
