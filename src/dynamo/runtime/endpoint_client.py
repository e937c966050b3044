"""A caller's live view of one endpoint's instances, and direct requests to them.

An instance is routable while discovery lists it and the request plane can reach it: when the
runtime watches peers (`--peer-keepalive-s` > 0) and the connection to an instance's address
breaks, the instance leaves `instance_ids()` at once (callbacks hear "remove") and comes back
("add") when a reconnect probe gets through and discovery still lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.discovery.base import INSTANCES_ROOT, WatchEvent
from dynamo.runtime.errors import NotFoundError, UnavailableError
from dynamo.runtime.request_scope import attach
from dynamo.runtime.tasks import wait_event
from dynamo.runtime.transport.planes import address_of

if TYPE_CHECKING:
    from dynamo.runtime.distributed import DistributedRuntime

log = logging.getLogger(__name__)
_SYNC_TIMEOUT_S = 10.0


class EndpointClient:
    """Watches `v1/instances/<path>/` and keeps `instance_id → request-plane address`.

    Addresses are `tcp://host:port` or `nats:<subject>`, whichever plane the instance serves.
    `instance_ids()` leaves out instances the request plane has marked down; `transport_address`
    knows every instance discovery lists.
    """

    def __init__(self, runtime: DistributedRuntime, address: EndpointAddress) -> None:
        self.address = address
        self._runtime = runtime
        self._prefix = f"{INSTANCES_ROOT}/{address.path}/"
        self._instances: dict[int, str] = {}
        self._callbacks: list[Callable[[str, int], None]] = []
        self._seen: set[str] = set()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._peers = runtime.request_client.peers
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        """Load the current instances and follow changes (idempotent)."""
        if self._task is not None:
            return
        if self._peers is not None:
            self._unsubscribe = self._peers.subscribe(self._on_peer)
        self._task = asyncio.create_task(self._watch(), name=f"instances {self.address}")
        # Wait until the watch has reported every key that exists now, so the view is
        # complete when start() returns and no add/remove between the two is missed.
        expected = set(await self._runtime.discovery.get_prefix(self._prefix))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SYNC_TIMEOUT_S
        while not expected <= self._seen and not self._task.done():
            self._progress.clear()
            await wait_event(self._progress, max(0.0, deadline - loop.time()))
            if loop.time() >= deadline:
                log.warning("instances of %s: discovery watch slow to sync", self.address)
                break
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise UnavailableError(f"watching {self.address} failed: {self._task.exception()}")

    def instance_ids(self) -> list[int]:
        """The instances to route to: listed by discovery and not marked down."""
        peers = self._peers
        if peers is None:
            return sorted(self._instances)
        return sorted(i for i, target in self._instances.items() if peers.is_up(target))

    def is_lost(self, instance_id: int) -> bool:
        """Whether a listed instance is out of routing because its connection failed."""
        target = self._instances.get(instance_id)
        return target is not None and self._peers is not None and self._peers.is_lost(target)

    def is_reachable(self, instance_id: int) -> bool:
        """Whether a listed instance is not marked down by the request plane."""
        target = self._instances.get(instance_id)
        return target is not None and (self._peers is None or self._peers.is_up(target))

    def transport_address(self, instance_id: int) -> str | None:
        return self._instances.get(instance_id)

    async def wait_for_instances(self, timeout_s: float) -> list[int]:
        """The instance ids once there is at least one; UnavailableError after `timeout_s`."""
        await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.instance_ids():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UnavailableError(f"no instance of {self.address} within {timeout_s}s")
            self._progress.clear()
            await wait_event(self._progress, remaining)
        return self.instance_ids()

    def generate(
        self, request: dict[str, Any], *, instance_id: int, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream the responses of `instance_id` to `request` (NotFoundError if unknown)."""
        target = self._instances.get(instance_id)
        if target is None:
            raise NotFoundError(f"instance {instance_id:x} of {self.address} is not registered")
        name = f"{self.address.path}/{instance_id:x}"
        return self._runtime.request_client.stream(
            target, name, attach(request), request_id=request_id
        )

    def on_change(self, callback: Callable[[str, int], None]) -> None:
        """Call `callback("add" | "remove", instance_id)` on every change from now on."""
        self._callbacks.append(callback)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._peers is not None:
            for target in self._instances.values():
                self._peers.unwatch(target)
        self._instances.clear()
        self._runtime._forget_client(self)

    async def _watch(self) -> None:
        watch = self._runtime.discovery.watch_prefix(self._prefix)
        try:
            async for event in watch:
                self._apply(event)
                self._seen.add(event.key)
                self._progress.set()
        finally:
            aclose = getattr(watch, "aclose", None)
            if aclose is not None:
                await aclose()

    def _apply(self, event: WatchEvent) -> None:
        suffix = event.key[len(self._prefix) :]
        try:
            instance_id = int(suffix, 16)
        except ValueError:
            log.warning("ignoring instance key with a non-hex id: %s", event.key)
            return
        if event.kind == "delete":
            target = self._instances.get(instance_id)
            if target is not None:
                routable = self.is_reachable(instance_id)
                del self._instances[instance_id]
                if self._peers is not None:
                    self._peers.unwatch(target)
                if routable:
                    self._notify("remove", instance_id)
            return
        transport = (event.value or {}).get("transport")
        target = address_of(transport, self._runtime.config.request_plane)
        if target is None:
            log.warning("instance %s has no known transport (%r); skipped", event.key, transport)
            return
        old = self._instances.get(instance_id)
        if old == target:
            return
        was_routable = old is not None and self.is_reachable(instance_id)
        self._instances[instance_id] = target
        if self._peers is not None:
            self._peers.watch(target)
            if old is not None:
                self._peers.unwatch(old)
        routable = self.is_reachable(instance_id)
        if routable and not was_routable:
            self._notify("add", instance_id)
        elif was_routable and not routable:
            self._notify("remove", instance_id)

    def _on_peer(self, target: str, up: bool) -> None:
        for instance_id in [i for i, t in self._instances.items() if t == target]:
            self._notify("add" if up else "remove", instance_id)
        self._progress.set()  # wakes wait_for_instances

    def _notify(self, change: str, instance_id: int) -> None:
        for callback in list(self._callbacks):
            try:
                callback(change, instance_id)
            except Exception:
                log.exception("instance %s callback failed", change)
