"""The distributed runtime: the one object a process uses to serve, call and publish.

It owns the process's discovery lease, its request-plane server (TCP or NATS, per
`--request-plane`; started on first `serve_endpoint`) and client (which reaches instances of
either plane), its event publisher, and its status server (which also serves the files it hosts
for peers); `shutdown` releases all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry

from dynamo.runtime.addressing import EndpointAddress, new_instance_id
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.discovery.base import (
    EVENT_PUBLISHERS_ROOT,
    INSTANCES_ROOT,
    MODEL_CARDS_ROOT,
    Discovery,
    WatchEvent,
)
from dynamo.runtime.discovery.factory import make_discovery
from dynamo.runtime.endpoint_client import EndpointClient
from dynamo.runtime.errors import ConfigError, DynamoError, UnavailableError
from dynamo.runtime.event_subscription import subscribe_events
from dynamo.runtime.health import HealthCheck, HealthChecks
from dynamo.runtime.hosted_files import HostedFiles
from dynamo.runtime.request_scope import scoped
from dynamo.runtime.system_server import SystemServer
from dynamo.runtime.transport.base import (
    EventPublisher,
    EventSubscriber,
    RequestHandler,
    RequestPlaneServer,
)
from dynamo.runtime.transport.events import event_topic
from dynamo.runtime.transport.planes import AnyPlaneClient, make_request_server, serve

__all__ = ["DistributedRuntime", "EndpointClient", "ServedEndpoint", "event_topic"]
log = logging.getLogger(__name__)


class ModelCardLike(Protocol):
    """What `serve_endpoint` needs of a model card (pydantic's `model_dump`)."""

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


class ServedEndpoint:
    """One endpoint instance this process serves; `unregister` withdraws it."""

    def __init__(
        self, runtime: DistributedRuntime, address: EndpointAddress, instance_id: int
    ) -> None:
        self.address = address
        self.instance_id = instance_id
        self.name = f"{address.path}/{instance_id:x}"
        self.instance_key = f"{INSTANCES_ROOT}/{self.name}"
        self.model_card_key: str | None = None
        self._runtime = runtime
        self._registered = True

    async def unregister(self) -> None:
        """Remove the discovery keys (routers stop sending), then refuse new requests."""
        if not self._registered:
            return
        self._registered = False
        discovery = self._runtime.discovery
        try:
            if self.model_card_key is not None:
                await discovery.delete(self.model_card_key)
            await discovery.delete(self.instance_key)
        finally:
            self._runtime._withdraw(self)


class DistributedRuntime:
    """Discovery + request plane + event plane of one process."""

    def __init__(self, config: RuntimeConfig, discovery: Discovery) -> None:
        self.config = config
        self.discovery = discovery
        self.instance_id = new_instance_id()
        self._server: RequestPlaneServer | None = None
        self._server_address: str | None = None
        self._server_lock = asyncio.Lock()
        self._request_client: AnyPlaneClient | None = None
        self._served: dict[str, ServedEndpoint] = {}
        self._clients: list[EndpointClient] = []
        self._publisher: EventPublisher | None = None
        self._publisher_lock = asyncio.Lock()
        self._subscribers: list[EventSubscriber] = []
        self._shutdown: asyncio.Task[None] | None = None
        self.hosted_files = HostedFiles()
        self.metrics_registry: CollectorRegistry = REGISTRY  # what the status server exposes
        self._system: SystemServer | None = None
        self._system_url: str | None = None
        self._system_lock = asyncio.Lock()
        self.health = HealthChecks()
        self._health_watch: asyncio.Task[object] | None = None

    @classmethod
    async def create(cls, config: RuntimeConfig) -> DistributedRuntime:
        """Check the config, start discovery (grants this process's lease)."""
        if config.request_plane not in ("tcp", "nats"):
            raise ConfigError(f"unknown request plane {config.request_plane!r}: use tcp or nats")
        if config.peer_keepalive_s < 0 or config.peer_reconnect_max_s <= 0:
            raise ConfigError(
                "--peer-keepalive-s must be >= 0 and --peer-reconnect-max-s > 0, got "
                f"{config.peer_keepalive_s} and {config.peer_reconnect_max_s}"
            )
        discovery = make_discovery(config)
        await discovery.start()
        return cls(config, discovery)

    # ------------------------------------------------------------------ request plane
    @property
    def request_client(self) -> AnyPlaneClient:
        """The process's request-plane client: `tcp://…` and `nats:…` addresses."""
        if self._request_client is None:
            self._request_client = AnyPlaneClient(
                self.config.nats_server,
                peer_keepalive_s=self.config.peer_keepalive_s,
                peer_reconnect_max_s=self.config.peer_reconnect_max_s,
            )
        return self._request_client

    @property
    def server_address(self) -> str | None:
        """`tcp://host:port` of this process's TCP server (the NATS URL on NATS), once started."""
        return self._server_address

    def served_endpoints(self) -> list[ServedEndpoint]:
        return list(self._served.values())

    def inflight(self) -> int:
        return self._server.inflight() if self._server is not None else 0

    async def _ensure_server(self) -> RequestPlaneServer:
        async with self._server_lock:
            if self._server is None:
                server = make_request_server(self.config)
                self._server_address = await server.start()
                self._server = server
            return self._server

    async def serve_endpoint(
        self,
        address: EndpointAddress,
        handler: RequestHandler,
        *,
        model_card: ModelCardLike | None = None,
        instance_id: int | None = None,
    ) -> ServedEndpoint:
        """Serve `handler` and register the instance (and its model card) in discovery."""
        if self._shutdown is not None:
            raise UnavailableError("runtime is shutting down")
        served = ServedEndpoint(
            self, address, self.instance_id if instance_id is None else instance_id
        )
        if served.name in self._served:
            raise ConfigError(f"{address} instance {served.instance_id:x} is already served")
        server = await self._ensure_server()
        self._served[served.name] = served
        try:
            transport = await serve(server, served.name, scoped(handler))
            info = {
                "namespace": address.namespace,
                "component": address.component,
                "endpoint": address.endpoint,
                "instance_id": served.instance_id,
                "transport": transport,
            }
            await self.discovery.put(served.instance_key, info)
            if model_card is not None:
                served.model_card_key = f"{MODEL_CARDS_ROOT}/{served.name}"
                await self.discovery.put(served.model_card_key, model_card.model_dump(mode="json"))
        except BaseException:
            with contextlib.suppress(DynamoError):
                await served.unregister()
            raise
        log.info("serving %s as instance %x at %s", address, served.instance_id, transport)
        return served

    def _withdraw(self, served: ServedEndpoint) -> None:
        self._served.pop(served.name, None)
        if self._server is not None:
            self._server.unregister(served.name)

    def client(self, address: EndpointAddress) -> EndpointClient:
        """A (not yet started) view of `address`'s instances; `await client.start()`."""
        endpoint_client = EndpointClient(self, address)
        self._clients.append(endpoint_client)
        return endpoint_client

    def _forget_client(self, endpoint_client: EndpointClient) -> None:
        with contextlib.suppress(ValueError):
            self._clients.remove(endpoint_client)

    # ------------------------------------------------------------------ status server
    async def start_system_server(self, port: int) -> str:
        """Start the status server on `port` (0 = any free port) unless it runs already;
        return the URL peers reach it at (`http://{--tcp-host}:{port}`)."""
        async with self._system_lock:
            if self._system is None or self._system_url is None:
                server = SystemServer(
                    port,
                    self._ready_endpoints,
                    registry=self.metrics_registry,
                    files=self.hosted_files,
                    health=self.health.check,
                )
                bound = await server.start()
                host = await _advertised_host(self.config.tcp_host)
                self._system, self._system_url = server, f"http://{host}:{bound}"
                log.info("status server at %s", self._system_url)
            return self._system_url

    async def files_url(self) -> str:
        """Where peers fetch `hosted_files`: the status server, started on `--system-port`,
        or on a free port when that is unset (files must be served either way)."""
        return await self.start_system_server(self.config.system_port or 0)

    # ------------------------------------------------------------------ health
    def add_health_check(self, name: str, check: HealthCheck) -> None:
        """Ask `check` on every `/health` and, every `--engine-health-interval-s`, in a
        watchdog: once it fails, `health.failed` is set (the process lifecycle then
        deregisters and exits 1)."""
        self.health.add(name, check)
        interval = self.config.engine_health_interval_s
        if interval > 0 and self._health_watch is None and not self.is_shutting_down:
            self._health_watch = asyncio.create_task(
                self.health.watch(interval), name="health-watch"
            )

    def remove_health_check(self, name: str) -> None:
        self.health.remove(name)

    def _ready_endpoints(self) -> list[str]:
        if self.is_shutting_down:
            return []
        return [str(s.address) for s in self.served_endpoints()]

    # ------------------------------------------------------------------ event plane
    async def event_publisher(self) -> EventPublisher:
        """The process's publisher (ZMQ ones are registered under `v1/events/<ns>/<id>`)."""
        async with self._publisher_lock:
            if self._publisher is None:
                if self.config.event_plane == "zmq":
                    from dynamo.runtime.transport.zmq_events import ZmqEventPublisher

                    zmq_pub = ZmqEventPublisher(self.config.tcp_host)
                    address = await zmq_pub.start()
                    key = f"{EVENT_PUBLISHERS_ROOT}/{self.config.namespace}/{self.instance_id:x}"
                    try:
                        await self.discovery.put(key, {"address": address})
                    except BaseException:
                        await zmq_pub.close()
                        raise
                    self._publisher = zmq_pub
                else:
                    from dynamo.runtime.transport.nats_events import NatsEventPublisher

                    nats_pub = NatsEventPublisher(self.config.nats_server)
                    await nats_pub.start()
                    self._publisher = nats_pub
            return self._publisher

    async def event_subscriber(self, topic_prefix: str) -> EventSubscriber:
        """A subscriber to `topic_prefix` from every publisher of this namespace."""
        subscriber = await subscribe_events(self.config, self.discovery, topic_prefix)
        self._subscribers.append(subscriber)
        return subscriber

    def watch_model_cards(self, namespace: str | None = None) -> AsyncIterator[WatchEvent]:
        """put/delete of model cards under `v1/mdc/` (of one namespace if given)."""
        prefix = f"{MODEL_CARDS_ROOT}/{namespace}/" if namespace else f"{MODEL_CARDS_ROOT}/"
        return self.discovery.watch_prefix(prefix)

    # ------------------------------------------------------------------ lifecycle
    async def shutdown(self, grace_s: float | None = None) -> None:
        """Unregister, drain in-flight requests for up to `grace_s`, close everything."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._do_shutdown(grace_s))
        await asyncio.shield(self._shutdown)

    @property
    def is_shutting_down(self) -> bool:
        return self._shutdown is not None

    async def _do_shutdown(self, grace_s: float | None) -> None:
        grace = self.config.graceful_shutdown_grace_period_s if grace_s is None else grace_s
        if self._health_watch is not None:
            self._health_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_watch
        for served in list(self._served.values()):
            try:
                await served.unregister()
            except DynamoError as exc:
                log.warning("unregistering %s failed: %s", served.address, exc)
        if self._server is not None:
            await self._server.stop(grace)
        for endpoint_client in list(self._clients):
            await endpoint_client.close()
        for subscriber in self._subscribers:
            await _close_quietly(subscriber.close(), "event subscriber")
        if self._publisher is not None:
            await _close_quietly(self._publisher.close(), "event publisher")
        if self._request_client is not None:
            await self._request_client.close()
        await _close_quietly(self.discovery.close(), "discovery")
        if self._system is not None:
            await self._system.stop()


async def _advertised_host(host: str) -> str:
    """The address peers reach a server bound to `host` at (a wildcard: this host's name)."""
    if host in ("", "0.0.0.0", "::"):
        host = await asyncio.to_thread(socket.gethostbyname, socket.gethostname())
    return f"[{host}]" if ":" in host else host


async def _close_quietly(closing: Any, what: str) -> None:
    try:
        await closing
    except (DynamoError, OSError) as exc:
        log.warning("closing %s failed: %s", what, exc)
