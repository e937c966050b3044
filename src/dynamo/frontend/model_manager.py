"""Keeps the served models in step with discovery and feeds the routers their events.

`ModelManager` watches model cards (through the runtime), keeps the `ModelRegistry`, one
`RoutedModel` per model, one endpoint client per endpoint, and forwards KV events and load
metrics from the event plane to the policy of the model whose worker sent them. A worker takes
requests once both its card and its endpoint instance are known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from dynamo.frontend.engine_client import EndpointClient, RoutedModel
from dynamo.frontend.errors import ModelNotFoundError, NotImplementedFeatureError
from dynamo.frontend.metrics import FrontendMetrics, WorkerLoad
from dynamo.frontend.models import ModelEntry, ModelRegistry, RegistryChange, WorkerEntry
from dynamo.protocols.model_card import ModelCard
from dynamo.router.base import RoutingPolicy
from dynamo.router.feeds import (
    FeedRuntime,
    InstanceClient,
    pump_worker_events,
    worker_events_prefix,
    worker_info_from_card,
)
from dynamo.router.policies import KvPolicy, PolicyBase
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PolicyFactory = Callable[[ModelCard], RoutingPolicy]


class ManagedClient(InstanceClient, EndpointClient, Protocol):
    """An endpoint client the manager starts, follows, routes through and closes."""

    def is_lost(self, instance_id: int) -> bool:
        """Still listed by discovery, but its request-plane connection failed."""


class _ClientState:
    __slots__ = ("client", "live", "refs")

    def __init__(self, client: ManagedClient) -> None:
        self.client = client
        self.live: set[int] = set(client.instance_ids())
        self.refs = 0


class ModelManager:
    def __init__(
        self,
        runtime: FeedRuntime,
        policy_factory: PolicyFactory,
        *,
        namespace: str | None,
        migration_limit: int = 0,
        metrics: FrontendMetrics | None = None,
        on_model_removed: Callable[[str], None] | None = None,
        use_kv_events: bool = True,
    ) -> None:
        self._runtime = runtime
        self._policy_factory = policy_factory
        self._namespace = namespace
        self._migration_limit = migration_limit
        self._metrics = metrics
        self._on_model_removed = on_model_removed
        self._use_kv_events = use_kv_events  # off: KV events are dropped undecoded
        self.registry = ModelRegistry()
        self._routed: dict[str, RoutedModel] = {}
        # Prefill pools, from a model's first prefill worker on (kept while the model exists).
        self._prefill: dict[str, RoutedModel] = {}
        self._prefill_workers: set[int] = set()
        self._clients: dict[EndpointAddress, _ClientState] = {}
        self._model_of_worker: dict[int, str] = {}
        self._thresholds: dict[str, tuple[float | None, int | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.synced = asyncio.Event()  # set once the first watch event was applied
        if metrics is not None:
            metrics.watch_workers(self)

    # --- lookups (request path) --------------------------------------------------------
    def lookup(self, name: str) -> tuple[ModelEntry, RoutedModel]:
        entry = self.registry.get(name)
        routed = self._routed.get(name)
        if entry is None or routed is None:
            raise ModelNotFoundError(name)
        return entry, routed

    def models(self) -> list[ModelEntry]:
        return self.registry.entries()

    def routed(self, name: str) -> RoutedModel | None:
        return self._routed.get(name)

    def prefill_of(self, name: str) -> RoutedModel | None:
        """The model's prefill pool (maybe empty now); None if it never had a prefill worker."""
        return self._prefill.get(name)

    def ready_workers(self, name: str) -> int:
        routed = self._routed.get(name)
        return len(routed.worker_ids()) if routed else 0

    def ready_workers_of(self, name: str) -> list[int]:
        """Decode (or aggregated) workers taking requests, then prefill workers."""
        routed = self._routed.get(name)
        prefill = self._prefill.get(name)
        return [
            *(routed.worker_ids() if routed else []),
            *(prefill.worker_ids() if prefill else []),
        ]

    def decode_index_blocks(self) -> Iterator[tuple[str, int]]:
        """(model, blocks the KV router indexes on its decode workers) per disaggregated model."""
        for name in self._prefill:
            routed = self._routed.get(name)
            if routed is not None and isinstance(routed.policy, KvPolicy):
                yield name, routed.policy.stats().index_size

    # --- per-worker gauges (read at scrape time) -----------------------------------------
    def live_workers(self) -> set[tuple[str, int]]:
        return {(name, iid) for name, routed in self._routed.items() for iid in routed.worker_ids()}

    def worker_loads(self) -> Iterator[WorkerLoad]:
        for name, routed in self._routed.items():
            yield from policy_loads(name, routed.policy)

    # --- busy thresholds (`/busy_threshold`) -------------------------------------------
    def busy_thresholds(self, name: str) -> dict[str, Any]:
        _, routed = self.lookup(name)
        current = getattr(routed.policy, "thresholds", None)
        return {
            "model": name,
            "active_decode_blocks_threshold": getattr(current, "active_decode_blocks", None),
            "active_prefill_tokens_threshold": getattr(current, "active_prefill_tokens", None),
        }

    def set_busy_thresholds(
        self, name: str, active_decode_blocks: float | None, active_prefill_tokens: int | None
    ) -> dict[str, Any]:
        _, routed = self.lookup(name)
        self._thresholds[name] = (active_decode_blocks, active_prefill_tokens)
        self._apply_thresholds(routed)
        return self.busy_thresholds(name)

    def _apply_thresholds(self, routed: RoutedModel) -> None:
        wanted = self._thresholds.get(routed.name)
        setter = getattr(routed.policy, "set_busy_thresholds", None)
        if wanted is None:
            return
        if setter is None:
            raise NotImplementedFeatureError(
                f"the routing policy of {routed.name!r} has no busy thresholds"
            )
        setter(*wanted)

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch(), name="model-card-watch"))
        subscriber = await self._runtime.event_subscriber(worker_events_prefix(self._namespace))
        events = pump_worker_events(subscriber, self._policy_of, kv_events=self._use_kv_events)
        self._tasks.append(asyncio.create_task(events, name="router-events"))

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for state in self._clients.values():
            await state.client.close()
        self._clients.clear()

    async def _watch(self) -> None:
        """Follow the model cards; if the watch fails, start a new one after a pause."""
        while True:
            try:
                async for event in self._runtime.watch_model_cards(self._namespace):
                    try:
                        await self.apply(event)
                    except Exception:
                        log.exception("failed to apply model-card event for %s", event.key)
                    self.synced.set()
                log.warning("the model-card watch ended; watching again")
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("the model-card watch failed; watching again in 1 s")
                await asyncio.sleep(1.0)

    def _policy_of(self, instance_id: int) -> RoutingPolicy | None:
        """The policy of the model that `instance_id` serves (it gets that worker's events)."""
        name = self._model_of_worker.get(instance_id)
        if name is None:
            return None
        pools = self._prefill if instance_id in self._prefill_workers else self._routed
        routed = pools.get(name)
        return routed.policy if routed is not None else None

    # --- discovery changes -------------------------------------------------------------
    async def apply(self, event: WatchEvent) -> None:
        for change in self.registry.apply(event):
            await self._apply_change(change)

    async def _apply_change(self, change: RegistryChange) -> None:
        name = change.model
        if change.kind == "model_added":
            entry = self.registry.get(name)
            if entry is None:  # added and removed within one event
                return
            self._routed[name] = self._new_pool(entry.card)
            self._apply_thresholds(self._routed[name])
        elif change.kind == "worker_added" and change.worker is not None:
            await self._worker_added(change.worker)
        elif change.kind == "worker_removed" and change.worker is not None:
            await self._worker_removed(change.worker)
        elif change.kind == "model_removed":
            self._routed.pop(name, None)
            self._prefill.pop(name, None)
            if self._metrics:
                self._metrics.remove_model(name)
            if self._on_model_removed:
                self._on_model_removed(name)
            log.info("model %s removed: its last worker left", name)
            return
        self._update_gauges(name)

    async def _worker_added(self, worker: WorkerEntry) -> None:
        state = self._clients.get(worker.address)
        if state is None:
            client: ManagedClient = self._runtime.client(worker.address)
            await client.start()
            state = _ClientState(client)
            address = worker.address
            client.on_change(lambda kind, iid: self._on_instance(address, kind, iid))
            self._clients[worker.address] = state
        state.refs += 1
        self._model_of_worker[worker.instance_id] = worker.card.name
        if worker.is_prefill:
            self._prefill_workers.add(worker.instance_id)
            if worker.card.name not in self._prefill:
                self._prefill[worker.card.name] = self._new_pool(worker.card)
        state.live.update(state.client.instance_ids())
        if worker.instance_id in state.live:
            self._activate(worker, state.client)
        log.info("model %s: worker %x registered", worker.card.name, worker.instance_id)

    def _new_pool(self, card: ModelCard) -> RoutedModel:
        """A model's decode (or aggregated) pool, or its prefill pool: migrations of either
        count in the model's migration metric."""
        on_migration = None
        if self._metrics is not None:
            counters = self._metrics.for_model(card.name).migrations
            on_migration = lambda kind: counters[kind].inc()  # noqa: E731
        return RoutedModel(
            card.name,
            self._policy_factory(card),
            migration_limit=max(self._migration_limit, card.migration_limit),
            on_migration=on_migration,
        )

    def _pool_of(self, worker: WorkerEntry) -> RoutedModel | None:
        pools = self._prefill if worker.is_prefill else self._routed
        return pools.get(worker.card.name)

    def _activate(self, worker: WorkerEntry, client: EndpointClient) -> None:
        routed = self._pool_of(worker)
        if routed is not None:
            info = worker_info_from_card(worker.instance_id, worker.card)
            routed.add_worker(info, client, bootstrap=worker.card.bootstrap)
            self._update_gauges(worker.card.name)

    async def _worker_removed(self, worker: WorkerEntry) -> None:
        self._model_of_worker.pop(worker.instance_id, None)
        self._prefill_workers.discard(worker.instance_id)
        routed = self._pool_of(worker)
        if routed is not None:
            routed.remove_worker(worker.instance_id)
        state = self._clients.get(worker.address)
        if state is not None:
            state.refs -= 1
            if state.refs <= 0:
                del self._clients[worker.address]
                await state.client.close()
        log.info("model %s: worker %x left", worker.card.name, worker.instance_id)

    def _on_instance(self, address: EndpointAddress, kind: str, instance_id: int) -> None:
        state = self._clients.get(address)
        if state is None:
            return
        name = self._model_of_worker.get(instance_id)
        entry = self.registry.get(name) if name else None
        if kind == "add":
            state.live.add(instance_id)
            worker = entry.workers.get(instance_id) if entry else None
            if worker is not None:
                self._activate(worker, state.client)
        elif kind == "remove":
            state.live.discard(instance_id)
            pools = self._prefill if instance_id in self._prefill_workers else self._routed
            routed = pools.get(name) if name else None
            if routed is not None and routed.has_worker(instance_id):
                routed.remove_worker(instance_id)
                self._update_gauges(routed.name)
                if state.client.is_lost(instance_id):
                    log.warning("model %s: worker %x lost by the request plane", name, instance_id)
                    if self._metrics is not None:
                        self._metrics.workers_lost.labels(routed.name).inc()

    def _update_gauges(self, name: str) -> None:
        entry = self.registry.get(name)
        if self._metrics is None or entry is None:
            return
        routed = self._routed.get(name)
        limit = routed.migration_limit if routed is not None else self._migration_limit
        self._metrics.set_model_config(
            entry.card, workers=self.ready_workers(name), migration_limit=limit
        )


def policy_loads(model: str, policy: RoutingPolicy) -> list[WorkerLoad]:
    """Each worker's load as `policy` sees it: the KV router's own bookkeeping of the
    requests it placed, else the load the workers pushed (none until a worker pushes)."""
    if isinstance(policy, KvPolicy):
        stats = policy.stats()
        tokens = stats.active_prefill_tokens
        return [
            WorkerLoad(model, wid, rank, blocks, tokens.get((wid, rank), 0))
            for (wid, rank), blocks in stats.active_decode_blocks.items()
        ]
    if isinstance(policy, PolicyBase):
        return [
            WorkerLoad(model, m.worker_id, m.dp_rank, m.kv_active_blocks, m.active_prefill_tokens)
            for m in policy.load_metrics().values()
        ]
    return []
