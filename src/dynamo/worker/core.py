"""A worker: one engine behind one endpoint instance, registered with its model card."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from dynamo.engines.base import Engine, EngineInfo, HealthCheckedEngine
from dynamo.protocols.engine import EngineRequest
from dynamo.protocols.kv_events import LoadMetrics
from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.addressing import EndpointAddress, new_instance_id
from dynamo.runtime.distributed import DistributedRuntime, ServedEndpoint, event_topic
from dynamo.runtime.errors import DynamoError
from dynamo.runtime.tracing import span
from dynamo.runtime.transport.base import RequestContext
from dynamo.worker.events import EventForwarder
from dynamo.worker.metrics import ComponentMetrics
from dynamo.worker.model_files import host_model_files

log = logging.getLogger(__name__)


class Worker:
    """Start the engine, register `generate`, forward events; `stop` drains nothing itself —
    the runtime's shutdown unregisters first and waits for in-flight requests."""

    def __init__(
        self,
        runtime: DistributedRuntime,
        engine: Engine,
        address: EndpointAddress,
        make_card: Callable[[EngineInfo], ModelCard],
        *,
        metrics: ComponentMetrics | None = None,
        instance_id: int | None = None,
        publish_kv_events: bool = True,
        model_dir: str | Path | Callable[[], str | Path] | None = None,
    ) -> None:
        self.runtime = runtime
        self.engine = engine
        self.address = address
        self.instance_id = instance_id or new_instance_id()
        self._make_card = make_card
        self._metrics = metrics
        self._labels = (address.namespace, address.component, address.endpoint)
        self._publish_kv_events = publish_kv_events
        # Its tokenizer/config files are hosted for frontends; a callable is asked once the
        # engine has started (a real engine knows its model directory only then).
        self._model_dir = model_dir
        self._forwarder: EventForwarder | None = None
        self._served: ServedEndpoint | None = None
        self.card: ModelCard | None = None

    async def start(self) -> ServedEndpoint:
        publisher = await self.runtime.event_publisher()
        self._forwarder = EventForwarder(
            self.instance_id,
            publisher,
            event_topic(self.address.namespace, self.address.component, "")[:-1],
            publish_kv_events=self._publish_kv_events,
            on_metrics=self._observe_load,
        )
        info = await self.engine.start(self._forwarder)
        card = self._make_card(info)
        model_dir = self._model_dir() if callable(self._model_dir) else self._model_dir
        if model_dir is not None:
            card = await host_model_files(self.runtime, card, model_dir)
        self.card = card
        self._forwarder.start(self.engine)
        if isinstance(self.engine, HealthCheckedEngine):
            self.runtime.add_health_check(self._health_name, self.engine.check_health)
        self._served = await self.runtime.serve_endpoint(
            self.address, self.generate, model_card=self.card, instance_id=self.instance_id
        )
        await self._forwarder.publish_metrics()
        log.info("worker %x serving %s (%s)", self.instance_id, self.address, self.card.name)
        return self._served

    @property
    def _health_name(self) -> str:
        return f"engine of {self.address} instance {self.instance_id:x}"

    def _observe_load(self, load: LoadMetrics) -> None:
        if self._metrics is not None:
            self._metrics.observe_load(self._labels, load)

    async def generate(
        self, request: dict[str, Any], context: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        metrics = self._metrics
        started = time.monotonic()
        if metrics is not None:
            metrics.requests_total.labels(*self._labels).inc()
            metrics.inflight_requests.labels(*self._labels).inc()
        engine_request: EngineRequest = request  # type: ignore[assignment]
        log.debug(
            "request %s: %d prompt tokens on %s",
            context.request_id,
            len(engine_request.get("token_ids") or ()),
            self.address,
        )
        try:
            with span("engine", component=self.address.component):
                async for output in self.engine.generate(engine_request, context):
                    transfer = output.get("kv_transfer")
                    if transfer is not None and metrics is not None:
                        metrics.kv_transfer_seconds.labels(*self._labels).observe(
                            transfer["seconds"]
                        )
                        metrics.kv_transfer_bytes.labels(*self._labels).inc(transfer["bytes"])
                    yield dict(output)
        except DynamoError as exc:
            if metrics is not None:
                metrics.errors_total.labels(*self._labels, type(exc).__name__).inc()
            raise
        finally:
            if metrics is not None:
                metrics.inflight_requests.labels(*self._labels).dec()
                metrics.request_duration_seconds.labels(*self._labels).observe(
                    time.monotonic() - started
                )
            if self._forwarder is not None:
                self._forwarder.load_changed()

    async def stop(self) -> None:
        self.runtime.remove_health_check(self._health_name)
        if self._served is not None:
            await self._served.unregister()
            self._served = None
        if self._forwarder is not None:
            await self._forwarder.stop()
        await self.engine.shutdown()
