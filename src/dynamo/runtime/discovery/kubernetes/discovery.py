"""Kubernetes discovery: no etcd; the API server's ConfigMaps are the registry.

Each process owns one ConfigMap `dyn-{id:x}` in its namespace, labelled
`nvidia.com/dynamo-discovery=true`, holding every key it registered. Its Pod owns it (POD_NAME
and POD_UID from the downward API), so Kubernetes deletes it with the pod; a heartbeat
annotation renewed every TTL/3 covers kill -9 inside a living pod and processes outside any
pod: watchers drop entries whose heartbeat is older than the TTL and delete the object once it
is long stale. `close` deletes the object. Watches share one list + watch of the label per
process (re-listing after a broken stream or 410 Gone) and diff the key sets into events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from dynamo.runtime.addressing import new_instance_id
from dynamo.runtime.discovery.base import WatchEvent, notify_changes
from dynamo.runtime.discovery.kubernetes.api import ConfigMapClient, KubeStatusError
from dynamo.runtime.discovery.kubernetes.objects import (
    DISCOVERY_LABEL,
    DISCOVERY_LABEL_VALUE,
    DiscoveryRecord,
    Freshness,
    PodIdentity,
    data_key,
    data_value,
    discovery_object,
    heartbeat_annotations,
    parse_record,
)
from dynamo.runtime.errors import ConfigError, DynamoError, TransportError, UnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.05, 5.0
_RBAC_HINT = (
    "the pod's ServiceAccount needs get, list, watch, create, patch and delete on configmaps "
    "(the operator's Role <graph>-k8s-service-discovery-role grants them)"
)


class KubernetesDiscovery:
    """`Discovery` over labelled ConfigMaps of one Kubernetes namespace."""

    def __init__(
        self,
        *,
        namespace: str | None = None,
        ttl_s: float = 10.0,
        pod: PodIdentity | None = None,
        kubeconfig: Any = None,
        rpc_timeout_s: float = 5.0,
        watch_restart_s: float = 300.0,
    ) -> None:
        if ttl_s <= 0:
            raise ConfigError(f"kubernetes discovery ttl must be > 0, got {ttl_s}")
        self.name = f"dyn-{new_instance_id():x}"
        self._namespace, self._pod, self._kubeconfig = namespace, pod, kubeconfig
        self._ttl_s, self._rpc_timeout_s = ttl_s, rpc_timeout_s
        self._watch_restart_s = watch_restart_s
        self._holder = f"{socket.gethostname()}/{os.getpid()}"
        self._api: ConfigMapClient | None = None
        self._owner: PodIdentity | None = None
        self._owned: dict[str, dict[str, Any]] = {}
        self._synced: dict[str, str] | None = None  # our object's data as last written
        self._write_lock = asyncio.Lock()
        self._objects: dict[str, DiscoveryRecord] = {}
        self._freshness = Freshness()
        self._view: dict[str, dict[str, Any]] = {}
        self._in_view: set[str] = set()  # names of the objects `_view` was built from
        self._watchers: dict[int, tuple[str, asyncio.Queue[WatchEvent]]] = {}
        self._next_watcher = 0
        self._listed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._informing = False
        self._collect_tried: set[tuple[str, float]] = set()
        self._may_collect = True
        self._closed = False

    @property
    def namespace(self) -> str | None:
        """The Kubernetes namespace in use (known once started)."""
        return self._api.namespace if self._api is not None else self._namespace

    async def start(self) -> None:
        if self._api is not None:
            return
        self._closed = False
        label = (DISCOVERY_LABEL, DISCOVERY_LABEL_VALUE)
        api = await ConfigMapClient.connect(
            self._namespace, label, config=self._kubeconfig, timeout_s=self._rpc_timeout_s
        )
        try:
            self._owner = await self._resolve_owner(api)
            self._api = api
            await self._retry("register", self._sync)
        except BaseException:
            self._api = None
            await api.close()
            raise
        self._tasks.append(asyncio.create_task(self._beat(), name="kube-discovery-heartbeat"))
        log.info("kubernetes discovery: ConfigMap %s/%s", api.namespace, self.name)

    async def _resolve_owner(self, api: ConfigMapClient) -> PodIdentity | None:
        pod = self._pod
        if pod is None or pod.uid:
            return pod
        try:  # POD_NAME without POD_UID: ask the API server
            return PodIdentity(pod.name, await api.pod_uid(pod.name))
        except KubeStatusError as exc:
            log.warning("no owner for discovery ConfigMap (pod %s: %s)", pod.name, exc)
            return None

    # ------------------------------------------------------------------ this process's keys
    def _started_api(self) -> ConfigMapClient:
        if self._closed:
            raise UnavailableError("kubernetes discovery is closed")
        if self._api is None:
            raise UnavailableError("kubernetes discovery is not started")
        return self._api

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self._started_api()
        self._owned[key] = dict(value)
        await self._retry(f"put {key!r}", self._sync)

    async def delete(self, key: str) -> None:
        if self._owned.pop(key, None) is None or self._api is None or self._closed:
            return
        await self._retry(f"delete {key!r}", self._sync)

    async def _sync(self) -> None:
        """Make our ConfigMap hold exactly `_owned` and renew its heartbeat; recreate it when
        it was deleted behind our back (stale collection by a peer, kubectl)."""
        async with self._write_lock:
            api = self._started_api()
            desired = {data_key(k): data_value(k, v) for k, v in self._owned.items()}
            for _ in range(3):
                if self._synced is None:
                    current = await api.get(self.name)
                    if current is None:
                        obj = discovery_object(
                            self.name, data=desired, renew_s=time.time(), ttl_s=self._ttl_s,
                            holder=self._holder, owner=self._owner,
                        )  # fmt: skip
                        try:
                            await api.create(obj)
                        except KubeStatusError as exc:
                            if exc.status == 409:
                                continue  # a lost reply of our own earlier create
                            raise
                        self._synced = desired
                        return
                    self._synced = dict(current.get("data") or {})
                changes: dict[str, str | None] = {
                    k: v for k, v in desired.items() if self._synced.get(k) != v
                }
                changes.update({k: None for k in self._synced if k not in desired})
                patch: dict[str, Any] = {
                    "metadata": {"annotations": heartbeat_annotations(time.time(), self._ttl_s)}
                }
                if changes:
                    patch["data"] = changes
                try:
                    await api.merge_patch(self.name, patch)
                except KubeStatusError as exc:
                    if exc.status != 404:
                        raise
                    log.warning("discovery ConfigMap %s was deleted; recreating it", self.name)
                    self._synced = None
                    continue
                self._synced = desired
                return
            raise KubeStatusError(f"ConfigMap {self.name} keeps changing under us", status=409)

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op`, retrying transient API failures for ~rpc timeout; refusals are fatal."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._rpc_timeout_s
        backoff = _BACKOFF_MIN_S
        while True:
            try:
                return await op()
            except KubeStatusError as exc:
                if exc.status in (401, 403):
                    raise ConfigError(f"kubernetes discovery {what}: {exc}; {_RBAC_HINT}") from exc
                if not exc.transient:
                    raise ConfigError(f"kubernetes discovery {what}: {exc}") from exc
                if loop.time() + backoff > deadline:
                    raise TransportError(f"kubernetes discovery {what}: {exc}") from exc
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _beat(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            try:
                await self._sync()
            except DynamoError as exc:
                if not failing:
                    log.warning("kubernetes discovery heartbeat failed: %s", exc)
                failing = True
                continue
            if failing:
                log.info("kubernetes discovery heartbeat recovered")
            failing = False

    # ------------------------------------------------------------------ reading
    def _ingest(self, obj: dict[str, Any]) -> DiscoveryRecord | None:
        record = parse_record(obj, self._ttl_s)
        if record is not None:
            self._freshness.observe(record, time.monotonic(), time.time())
        return record

    def _live(self, records: Iterable[DiscoveryRecord]) -> list[DiscoveryRecord]:
        """The records whose heartbeat is current, by name (later names win a shared key)."""
        now = time.monotonic()
        live = [r for r in records if self._freshness.alive(r.name, now)]
        return sorted(live, key=lambda r: r.name)

    @staticmethod
    def _entries(records: Iterable[DiscoveryRecord]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for record in records:
            out.update(record.entries)
        return out

    async def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        api = self._started_api()
        items, _ = await self._retry("list", api.list)
        records = [r for obj in items if (r := self._ingest(obj)) is not None]
        if not self._informing:
            self._freshness.forget({r.name for r in records})
        entries = self._entries(self._live(records))
        return {k: v for k, v in entries.items() if k.startswith(prefix)}

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        self._started_api()
        if not self._informing:
            self._informing = True
            self._tasks.append(asyncio.create_task(self._inform(), name="kube-discovery-watch"))
            self._tasks.append(asyncio.create_task(self._sweep(), name="kube-discovery-sweep"))
        await self._listed.wait()
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        for key, value in self._view.items():
            if key.startswith(prefix):
                queue.put_nowait(WatchEvent("put", key, value))
        wid = self._next_watcher = self._next_watcher + 1
        self._watchers[wid] = (prefix, queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.pop(wid, None)

    async def _inform(self) -> None:
        """List, then watch from the list's version; list again when the watch breaks."""
        api = self._started_api()
        backoff, failing = _BACKOFF_MIN_S, False
        while True:
            try:
                items, version = await api.list()
                self._objects = {r.name: r for obj in items if (r := self._ingest(obj))}
                self._freshness.forget(set(self._objects))
                self._publish()
                self._listed.set()
                if failing:
                    log.info("kubernetes discovery watch resynchronised")
                backoff, failing = _BACKOFF_MIN_S, False
                while True:
                    version = await self._watch_session(api, version)
            except KubeStatusError as exc:
                if exc.status == 410:
                    log.info("kubernetes discovery watch expired; listing again")
                    continue
                if not failing:
                    log.warning("kubernetes discovery watch broke (%s); retrying", exc)
                failing = True
            except Exception:  # a malformed reply must not end discovery for this process
                log.exception("kubernetes discovery watch failed; listing again")
                failing = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _watch_session(self, api: ConfigMapClient, version: str | None) -> str | None:
        """Apply watch events until the session limit (a silently dead connection cannot
        hang the watch for longer); return the version to resume from."""
        with contextlib.suppress(TimeoutError):
            async with (
                asyncio.timeout(self._watch_restart_s),
                contextlib.aclosing(api.watch(version)) as events,
            ):
                async for kind, obj in events:
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    name = meta.get("name")
                    if kind == "BOOKMARK" or not name:
                        continue
                    self._apply(name, None if kind == "DELETED" else obj)
        return version

    def _apply(self, name: str, obj: dict[str, Any] | None) -> None:
        """One watched change; a mere heartbeat of a live owner changes no entry, so it
        skips the view recomputation (heartbeats are most of the events)."""
        previous = self._objects.get(name)
        record = self._ingest(obj) if obj is not None else None
        if record is None:
            self._objects.pop(name, None)
            self._freshness.forget(set(self._objects))
        else:
            self._objects[name] = record
            unchanged = previous is not None and previous.entries == record.entries
            if unchanged and name in self._in_view:
                return
        self._publish()

    def _publish(self) -> None:
        """Recompute the live view and send every difference to the watchers."""
        live = self._live(self._objects.values())
        self._in_view = {r.name for r in live}
        new = self._entries(live)
        old, self._view = self._view, new
        notify_changes(old, new, self._watchers.values())

    async def _sweep(self) -> None:
        """Expire entries whose heartbeat lapsed (no event announces that) and delete the
        objects of owners that are long gone; paced by the shortest TTL any writer declares."""
        while True:
            shortest_ttl_s = min([self._ttl_s, *(r.ttl_s for r in self._objects.values())])
            await asyncio.sleep(max(0.05, shortest_ttl_s / 4))
            self._publish()
            if self._may_collect:
                await self._collect_stale()

    async def _collect_stale(self) -> None:
        api = self._started_api()
        now = time.monotonic()
        for name in list(self._objects):
            stale = self._freshness.collectable(name, now)
            if name == self.name or stale is None or (name, stale) in self._collect_tried:
                continue
            self._collect_tried.add((name, stale))
            try:
                current = await api.get(name)
                record = parse_record(current, self._ttl_s) if current is not None else None
                if record is not None and record.renew_s == stale and await api.delete(name):
                    log.info("deleted discovery ConfigMap %s: its heartbeat stopped", name)
            except KubeStatusError as exc:
                if exc.status == 403:
                    self._may_collect = False
                    log.info("may not delete stale discovery ConfigMaps (%s); ignoring them", exc)
                    return
                log.debug("could not delete stale discovery ConfigMap %s: %s", name, exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._informing = False
        self._listed.clear()
        api, self._api = self._api, None
        if api is not None:
            try:
                await asyncio.wait_for(api.delete(self.name), self._rpc_timeout_s)
            except (DynamoError, TimeoutError) as exc:
                log.warning("could not delete discovery ConfigMap %s: %s", self.name, exc)
            await api.close()
        self._owned.clear()
        self._synced = None
