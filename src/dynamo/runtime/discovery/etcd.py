"""etcd v3 discovery (aetcd): one lease per process, keys attached to it, prefix watches.

The lease (TTL `ttl_s`) is kept alive every TTL/3. If a keep-alive fails (etcd restarted,
network blip) the process reconnects with jittered backoff 50 ms → 5 s (`runtime.retry`, so
that the clients of a restarted etcd do not all call back at once), keeps its old lease if etcd
still knows it, else grants a new one, and re-puts every key it owns. A put that finds its
lease gone before the keep-alive noticed (etcd lost its data) does the same at once. Watches
resynchronise after a broken stream by re-reading the prefix and emitting the difference;
keys missing from that read are waited for, up to one TTL, before they are reported deleted
(an etcd that lost its data gets them back from their owners within that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import grpc

from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.errors import ConfigError, TransportError, UnavailableError
from dynamo.runtime.retry import Backoff, retry

log = logging.getLogger(__name__)
T = TypeVar("T")
_ERRORS = (aetcd.exceptions.ClientError, grpc.RpcError, OSError, TimeoutError)
RESYNC_POLL_S = 0.25  # re-read period while keys missing after a watch break come back


def _transient(exc: Exception) -> bool:
    return isinstance(exc, _ERRORS)


def _lease_not_found(exc: Exception) -> bool:
    """etcd answers NOT_FOUND ("requested lease not found") to a put on a lease it lost."""
    cause = exc.__cause__ if isinstance(exc, aetcd.exceptions.ClientError) else exc
    return isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.NOT_FOUND


def _cancel_requested() -> bool:
    """Whether the current task has been asked to stop.

    On Python 3.11, `asyncio.wait_for` can swallow a cancellation that arrives just as the
    awaited call completes, and aetcd creates every watch through `wait_for`: the caller's
    task then runs on in state "cancelling" and would wait on its new watch forever (the
    planner's virtual-connector tests hung this way). Checked after each watch creation.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def parse_endpoints(endpoints: str) -> list[tuple[str, int]]:
    """`http://h1:2379,h2:2379` → [(h1, 2379), (h2, 2379)]."""
    out = []
    for raw in (p.strip() for p in endpoints.split(",")):
        if not raw:
            continue
        url = urlsplit(raw if "://" in raw else "http://" + raw)
        if url.scheme != "http":
            raise ConfigError(f"etcd endpoint {raw!r}: only http:// endpoints are supported")
        try:
            port = url.port or 2379
        except ValueError as exc:
            raise ConfigError(f"etcd endpoint {raw!r}: bad port") from exc
        if not url.hostname:
            raise ConfigError(f"etcd endpoint {raw!r}: missing host")
        out.append((url.hostname, port))
    if not out:
        raise ConfigError("ETCD_ENDPOINTS is empty")
    return out


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class EtcdDiscovery:
    """`Discovery` over a real etcd v3 cluster."""

    def __init__(self, endpoints: str, *, ttl_s: float = 10.0, rpc_timeout_s: float = 5.0) -> None:
        if ttl_s <= 0:
            raise ConfigError(f"etcd lease ttl must be > 0, got {ttl_s}")
        self._endpoints = parse_endpoints(endpoints)
        self._ttl = max(1, math.ceil(ttl_s))
        self._rpc_timeout = max(1, math.ceil(rpc_timeout_s))
        self._endpoint_index = 0
        self._client: aetcd.Client | None = None
        self._lease_id: int | None = None
        self._owned: dict[str, bytes] = {}
        self._ready = asyncio.Event()
        self._lease_lock = asyncio.Lock()  # one re-grant at a time (keep-alive or a put)
        self._keepalive: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def lease_id(self) -> int | None:
        return self._lease_id

    @property
    def endpoint(self) -> str:
        host, port = self._endpoints[self._endpoint_index]
        return f"http://{host}:{port}"

    def _new_client(self) -> aetcd.Client:
        host, port = self._endpoints[self._endpoint_index]
        return aetcd.Client(host=host, port=port, timeout=self._rpc_timeout)

    async def start(self) -> None:
        if self._keepalive is not None:
            return
        self._closed = False

        async def connect() -> None:
            self._client = self._new_client()
            try:
                await self._establish_lease(self._client)
            except _ERRORS:
                await self._drop_client()
                raise

        try:  # transient failures (e.g. etcd still starting) are retried for ~rpc timeout
            await retry(connect, transient=_transient, timeout_s=self._rpc_timeout)
        except _ERRORS as exc:
            raise TransportError(f"cannot reach etcd at {self.endpoint}: {exc}") from exc
        self._keepalive = asyncio.create_task(self._keep_alive(), name="etcd-lease-keepalive")

    async def _establish_lease(self, client: aetcd.Client) -> None:
        """Keep the current lease if etcd still has it, else grant one; (re)put owned keys."""
        async with self._lease_lock:
            await self._establish_lease_locked(client)

    async def _establish_lease_locked(self, client: aetcd.Client) -> None:
        lease_id = self._lease_id
        if lease_id is not None:
            reply = await client.refresh_lease(lease_id)
            if reply is None or reply.TTL <= 0:
                lease_id = None
        if lease_id is None:
            lease_id = (await client.lease(self._ttl)).id
            if self._lease_id is not None:
                log.warning("etcd lease %x was lost; granted %x", self._lease_id, lease_id)
        self._lease_id = lease_id
        for key, data in list(self._owned.items()):
            await client.put(key.encode(), data, lease=lease_id)
        self._ready.set()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            client, lease_id = self._client, self._lease_id
            try:
                if client is None or lease_id is None:
                    raise TransportError("no etcd client")
                reply = await client.refresh_lease(lease_id)
                if reply is not None and reply.TTL > 0:
                    continue
                log.warning("etcd lease %x expired; re-registering", lease_id)
            except (*_ERRORS, TransportError) as exc:
                log.warning("etcd keep-alive to %s failed (%s); reconnecting", self.endpoint, exc)
            self._ready.clear()
            await self._recover()

    async def _recover(self) -> None:
        backoff = Backoff()
        while True:
            if len(self._endpoints) > 1 or self._client is None:
                await self._drop_client()
                self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)
                self._client = self._new_client()
            try:
                await self._establish_lease(self._client)
                log.info(
                    "etcd at %s: lease %x, %d keys registered",
                    self.endpoint,
                    self._lease_id or 0,
                    len(self._owned),
                )
                return
            except _ERRORS as exc:
                log.debug("etcd reconnect failed: %s", exc)
            await backoff.sleep()

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                await client.close()

    async def _ready_client(self) -> aetcd.Client:
        if self._closed:
            raise UnavailableError("etcd discovery is closed")
        await self._ready.wait()
        if self._client is None:
            raise UnavailableError("etcd discovery is not started")
        return self._client

    async def _retry(self, what: str, op: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run `op` on the current client, retrying transient failures for ~rpc timeout."""

        async def attempt() -> T:
            return await op(await self._ready_client())

        try:
            return await retry(attempt, transient=_transient, timeout_s=self._rpc_timeout)
        except _ERRORS as exc:
            raise TransportError(f"etcd {what} at {self.endpoint} failed: {exc}") from exc

    async def put(self, key: str, value: dict[str, Any]) -> None:
        if self._closed:
            raise UnavailableError("etcd discovery is closed")
        data = json.dumps(value).encode()
        self._owned[key] = data
        if not self._ready.is_set():
            log.info("etcd unreachable: %s will be registered when it is back", key)
            return

        async def put_owned(client: aetcd.Client) -> None:
            lease_id = self._lease_id
            try:
                await client.put(key.encode(), data, lease=lease_id)
            except aetcd.exceptions.ClientError as exc:
                if not _lease_not_found(exc):
                    raise
                await self._regrant(client, lease_id)  # re-puts every owned key
                if self._owned.get(key) == data:  # a concurrent re-grant may have missed it
                    await client.put(key.encode(), data, lease=self._lease_id)

        await self._retry(f"put {key!r}", put_owned)

    async def _regrant(self, client: aetcd.Client, lost: int | None) -> None:
        """etcd lost lease `lost` (its data was wiped) before the keep-alive noticed: grant a
        new one and re-put every owned key now, unless a concurrent caller already did."""
        async with self._lease_lock:
            if self._lease_id != lost:
                return
            log.warning("etcd lease %x not found on put; re-registering", lost or 0)
            await self._establish_lease_locked(client)

    async def delete(self, key: str) -> None:
        self._owned.pop(key, None)
        if self._client is None or not self._ready.is_set():
            return
        await self._retry(f"delete {key!r}", lambda c: c.delete(key.encode()))

    async def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        found = await self._retry(f"get {prefix!r}", lambda c: c.get_prefix(prefix.encode()))
        return {kv.key.decode(): value for kv in found if (value := _decode(kv.value)) is not None}

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        known: dict[str, dict[str, Any]] = {}
        backoff = Backoff()
        while True:
            try:
                client = await self._ready_client()
                snapshot, current = await self._resync_read(client, prefix, known)
                for key in [k for k in known if k not in current]:
                    del known[key]
                    yield WatchEvent("delete", key, None)
                for key, value in current.items():
                    if known.get(key) != value:
                        known[key] = value
                        yield WatchEvent("put", key, value)
                watch = await client.watch_prefix(
                    prefix.encode(), start_revision=snapshot.header.revision + 1
                )
                if _cancel_requested():  # a cancellation aetcd swallowed (see the function)
                    with contextlib.suppress(*_ERRORS):
                        await watch.cancel()
                    raise asyncio.CancelledError
                backoff.reset()
                try:
                    async for event in watch:
                        key = event.kv.key.decode()
                        if event.kind == aetcd.rtypes.EventKind.PUT:
                            decoded = _decode(event.kv.value)
                            if decoded is not None:
                                known[key] = decoded
                                yield WatchEvent("put", key, decoded)
                        elif known.pop(key, None) is not None:
                            yield WatchEvent("delete", key, None)
                finally:
                    with contextlib.suppress(*_ERRORS):
                        await watch.cancel()
            except _ERRORS as exc:
                if _cancel_requested():
                    raise asyncio.CancelledError from exc
                log.info("etcd watch of %r broke (%s); resynchronising", prefix, exc)
                await backoff.sleep()

    async def _resync_read(
        self, client: Any, prefix: str, known: dict[str, dict[str, Any]]
    ) -> tuple[Any, dict[str, dict[str, Any]]]:
        """The prefix now, for a (re)started watch. After a break, keys this watch knew
        that are missing may be a restarted etcd that lost its data: their owners put them
        back when their keep-alive reconnects. Re-read until they are back or one lease TTL
        has passed (what a dead owner's lease would take to expire anyway), so that readers
        do not drop live workers for that moment."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ttl
        while True:
            snapshot = await client.get_prefix(prefix.encode())
            current = {
                kv.key.decode(): v for kv in snapshot if (v := _decode(kv.value)) is not None
            }
            if all(k in current for k in known) or loop.time() >= deadline:
                return snapshot, current
            await asyncio.sleep(RESYNC_POLL_S)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        if self._client is not None and self._lease_id is not None and self._ready.is_set():
            with contextlib.suppress(*_ERRORS):
                await asyncio.wait_for(self._client.revoke_lease(self._lease_id), 2.0)
        self._ready.clear()
        self._owned.clear()
        self._lease_id = None
        await self._drop_client()
