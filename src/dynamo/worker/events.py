"""Forward an engine's KV events and load metrics to the event plane."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dynamo.engines.base import Engine, EngineMetrics
from dynamo.protocols.kv_events import (
    KV_EVENTS_TOPIC,
    KV_METRICS_TOPIC,
    KvCacheEvent,
    LoadMetrics,
    RouterEvent,
)
from dynamo.runtime.tasks import cancel_and_wait, wait_event
from dynamo.runtime.transport.base import EventPublisher

log = logging.getLogger(__name__)


def to_load_metrics(worker_id: int, m: EngineMetrics) -> LoadMetrics:
    return LoadMetrics(
        worker_id=worker_id,
        dp_rank=m.dp_rank,
        request_active_slots=m.running_requests,
        request_total_slots=m.max_num_seqs,
        num_requests_waiting=m.waiting_requests,
        kv_active_blocks=m.active_kv_blocks,
        kv_total_blocks=m.total_kv_blocks,
        active_prefill_tokens=m.active_prefill_tokens,
        gpu_prefix_cache_hit_rate=m.prefix_cache_hit_rate,
    )


class EventForwarder:
    """The `EngineEventSink` a worker hands its engine.

    KV events are queued in order and published by one task; load metrics go out every
    `interval_s` and promptly (coalesced) when the engine says load changed.
    """

    def __init__(
        self,
        worker_id: int,
        publisher: EventPublisher,
        topic_base: str,
        *,
        publish_kv_events: bool = True,
        interval_s: float = 1.0,
        on_metrics: Callable[[LoadMetrics], None] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self._publisher = publisher
        self._kv_topic = f"{topic_base}.{KV_EVENTS_TOPIC}"
        self._metrics_topic = f"{topic_base}.{KV_METRICS_TOPIC}"
        self._publish_kv = publish_kv_events
        self._interval_s = interval_s
        self._on_metrics = on_metrics
        self._events: asyncio.Queue[KvCacheEvent] = asyncio.Queue()
        self._load_dirty = asyncio.Event()
        self._engine: Engine | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_metrics: tuple[LoadMetrics, ...] = ()

    # --- EngineEventSink ---------------------------------------------------------------
    def kv_event(self, event: KvCacheEvent) -> None:
        if self._publish_kv:
            self._events.put_nowait(event)

    def load_changed(self) -> None:
        self._load_dirty.set()

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, engine: Engine) -> None:
        self._engine = engine
        self._tasks = [
            asyncio.create_task(self._pump_events(), name="kv-events"),
            asyncio.create_task(self._pump_metrics(), name="load-metrics"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _pump_events(self) -> None:
        while True:
            event = await self._events.get()
            payload = RouterEvent(self.worker_id, event).to_wire()
            try:
                await self._publisher.publish(self._kv_topic, payload)
            except Exception:  # the event plane being down must not kill the worker
                log.exception("publishing a KV event failed")

    async def _pump_metrics(self) -> None:
        while True:
            await wait_event(self._load_dirty, self._interval_s)
            self._load_dirty.clear()
            await self.publish_metrics()
            await asyncio.sleep(0.005)  # coalesce bursts of load changes

    async def publish_metrics(self) -> None:
        if self._engine is None:
            return
        metrics = tuple(to_load_metrics(self.worker_id, m) for m in self._engine.metrics())
        self._last_metrics = metrics
        for m in metrics:
            if self._on_metrics is not None:
                self._on_metrics(m)
            try:
                await self._publisher.publish(self._metrics_topic, m.to_wire())
            except Exception:
                log.exception("publishing load metrics failed")

    @property
    def last_metrics(self) -> tuple[LoadMetrics, ...]:
        return self._last_metrics
