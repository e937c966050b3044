"""Kubernetes discovery: no etcd; the API server's ConfigMaps are the registry.

Each process keeps every key it registered in one ConfigMap of its namespace, labelled
`nvidia.com/dynamo-discovery=true`. Two ways to tell whether its writer lives:

* in a pod (POD_NAME, POD_UID from the downward API): the ConfigMap is named after the pod
  (`dyn-{pod}`, or `dyn-{pod}-{container}` with DYN_CONTAINER_NAME), owned by it (deleted with
  it) and live while the pod is Ready in an EndpointSlice of a discovery Service (the operator
  creates one per graph). Writes happen only when keys change, batched over `write_batch_s`;
  a process restarted in the same pod overwrites its predecessor's record.
* outside any pod (`dynamo serve` from a laptop, tests): the ConfigMap `dyn-{id:x}` carries a
  heartbeat renewed every TTL/3; watchers drop it once the heartbeat is older than the TTL and
  delete it once it is long stale.

`close` deletes the object. Reads live in `informer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from dynamo.runtime.addressing import new_instance_id
from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.discovery.kubernetes.api import ConfigMapClient, KubeStatusError
from dynamo.runtime.discovery.kubernetes.informer import Informer
from dynamo.runtime.discovery.kubernetes.objects import (
    DISCOVERY_LABEL,
    DISCOVERY_LABEL_VALUE,
    DISCOVERY_SERVICE_LABEL,
    RENEW_ANNOTATION,
    TTL_ANNOTATION,
    PodIdentity,
    data_key,
    data_value,
    discovery_object,
    heartbeat_annotations,
    pod_object_name,
)
from dynamo.runtime.discovery.kubernetes.retry import retry
from dynamo.runtime.errors import ConfigError, DynamoError, UnavailableError
from dynamo.runtime.retry import Backoff

log = logging.getLogger(__name__)


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
        write_batch_s: float = 0.2,
    ) -> None:
        if ttl_s <= 0:
            raise ConfigError(f"kubernetes discovery ttl must be > 0, got {ttl_s}")
        if write_batch_s < 0:
            raise ConfigError(f"kubernetes discovery write batch must be >= 0, got {write_batch_s}")
        self._heartbeat = pod is None
        self.name = pod_object_name(pod) if pod is not None else f"dyn-{new_instance_id():x}"
        self._namespace, self._pod, self._kubeconfig = namespace, pod, kubeconfig
        self._ttl_s, self._rpc_timeout_s = ttl_s, rpc_timeout_s
        self._watch_restart_s, self._write_batch_s = watch_restart_s, write_batch_s
        self._holder = f"{socket.gethostname()}/{os.getpid()}"
        self._api: ConfigMapClient | None = None
        self._informer: Informer | None = None
        self._owner: PodIdentity | None = None
        self._owned: dict[str, dict[str, Any]] = {}
        self._synced: dict[str, str] | None = None  # our object's data as last written
        self._foreign = False  # the object was last written by an earlier process of the pod
        self._write_lock = asyncio.Lock()
        self._staged = self._written = 0  # changes of `_owned` made / written (pod mode)
        self._dirty = asyncio.Event()
        self._flushed = asyncio.Condition()
        self._write_error: DynamoError | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def namespace(self) -> str | None:
        """The Kubernetes namespace in use (known once started)."""
        return self._api.namespace if self._api is not None else self._namespace

    @property
    def liveness(self) -> str:
        """`readiness` (in a pod) or `heartbeat` (outside any pod)."""
        return "heartbeat" if self._heartbeat else "readiness"

    async def start(self) -> None:
        if self._api is not None:
            return
        self._closed = False
        api = await ConfigMapClient.connect(
            self._namespace,
            (DISCOVERY_LABEL, DISCOVERY_LABEL_VALUE),
            (DISCOVERY_SERVICE_LABEL, DISCOVERY_LABEL_VALUE),
            config=self._kubeconfig,
            timeout_s=self._rpc_timeout_s,
        )
        try:
            self._owner = await self._resolve_owner(api)
            self._api = api
            if self._heartbeat:
                await self._retry("register", self._sync)
            else:
                await self._retry("register", self._adopt)
        except BaseException:
            self._api = None
            await api.close()
            raise
        self._informer = Informer(
            api, ttl_s=self._ttl_s, own_name=self.name, rpc_timeout_s=self._rpc_timeout_s,
            watch_restart_s=self._watch_restart_s,
        )  # fmt: skip
        if self._heartbeat:
            self._tasks.append(asyncio.create_task(self._beat(), name="kube-discovery-heartbeat"))
        else:
            writer = asyncio.create_task(self._write_behind(), name="kube-discovery-writer")
            self._tasks.append(writer)
        log.info(
            "kubernetes discovery: ConfigMap %s/%s (liveness: %s)",
            api.namespace, self.name, self.liveness,
        )  # fmt: skip

    async def _resolve_owner(self, api: ConfigMapClient) -> PodIdentity | None:
        pod = self._pod
        if pod is None or pod.uid:
            return pod
        try:  # POD_NAME without POD_UID: ask the API server
            uid = await api.pod_uid(pod.name)
        except KubeStatusError as exc:
            log.warning("no owner for discovery ConfigMap (pod %s: %s)", pod.name, exc)
            return pod
        return PodIdentity(pod.name, uid, pod.container)

    async def _adopt(self) -> None:
        """Check that the API server answers; an object left by an earlier process of this pod
        gets rewritten (with the keys registered by then) even if this one registers none."""
        if await self._started_api().get(self.name) is not None:
            self._stage()

    # ------------------------------------------------------------------ this process's keys
    def _started_api(self) -> ConfigMapClient:
        if self._closed:
            raise UnavailableError("kubernetes discovery is closed")
        if self._api is None:
            raise UnavailableError("kubernetes discovery is not started")
        return self._api

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """Outside a pod the write is done on return; in a pod it is batched with the puts of
        the next `write_batch_s` (the pod's readiness decides visibility anyway): `flush`
        waits for it."""
        self._started_api()
        self._owned[key] = dict(value)
        await self._changed(f"put {key!r}")

    async def delete(self, key: str) -> None:
        if self._owned.pop(key, None) is None or self._api is None or self._closed:
            return
        await self._changed(f"delete {key!r}")

    async def _changed(self, what: str) -> None:
        if self._heartbeat:
            await self._retry(what, self._sync)
        else:
            self._stage()

    def _stage(self) -> None:
        self._staged += 1
        self._dirty.set()

    async def flush(self) -> None:
        """Wait until every change made so far is written (raises the error of a failing
        write); immediate outside a pod."""
        target = self._staged
        async with self._flushed:
            await self._flushed.wait_for(
                lambda: self._written >= target or self._write_error is not None
            )
            if self._written < target and self._write_error is not None:
                raise self._write_error

    async def _write_behind(self) -> None:
        """Write `_owned` after each batch of changes; retry failures with backoff."""
        backoff = Backoff()
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._write_batch_s)  # gather a worker's startup registrations
            self._dirty.clear()
            target = self._staged
            try:
                await self._retry("write", self._sync)
            except DynamoError as exc:
                if self._write_error is None:
                    log.error("kubernetes discovery could not write its keys: %s", exc)
                async with self._flushed:
                    self._write_error = exc
                    self._flushed.notify_all()
                self._dirty.set()
                await backoff.sleep()
                continue
            if self._write_error is not None:
                log.info("kubernetes discovery writes recovered")
            backoff.reset()
            async with self._flushed:
                self._written, self._write_error = target, None
                self._flushed.notify_all()

    async def _sync(self) -> None:
        """Make our ConfigMap hold exactly `_owned` (and, outside a pod, renew its heartbeat);
        recreate it when it was deleted behind our back (stale collection by a peer, kubectl)."""
        async with self._write_lock:
            api = self._started_api()
            desired = {data_key(k): data_value(k, v) for k, v in self._owned.items()}
            for _ in range(3):
                if self._synced is None:
                    current = await api.get(self.name)
                    if current is None:
                        try:
                            await api.create(self._object(desired))
                        except KubeStatusError as exc:
                            if exc.status == 409:
                                continue  # a lost reply of our own earlier create
                            raise
                        self._synced, self._foreign = desired, False
                        return
                    self._synced = dict(current.get("data") or {})
                    self._foreign = not self._heartbeat
                changes: dict[str, str | None] = {
                    k: v for k, v in desired.items() if self._synced.get(k) != v
                }
                changes.update({k: None for k in self._synced if k not in desired})
                patch: dict[str, Any] = {}
                if self._heartbeat:
                    patch["metadata"] = {
                        "annotations": heartbeat_annotations(time.time(), self._ttl_s)
                    }
                elif self._foreign:  # take over the record of an earlier process of the pod
                    metadata = self._object(desired)["metadata"]
                    stale = dict.fromkeys((RENEW_ANNOTATION, TTL_ANNOTATION))  # no heartbeat
                    metadata["annotations"] = {**stale, **metadata["annotations"]}
                    patch["metadata"] = metadata
                if changes:
                    patch["data"] = changes
                if not patch:
                    return
                try:
                    await api.merge_patch(self.name, patch)
                except KubeStatusError as exc:
                    if exc.status != 404:
                        raise
                    log.warning("discovery ConfigMap %s was deleted; recreating it", self.name)
                    self._synced = None
                    continue
                self._synced, self._foreign = desired, False
                return
            raise KubeStatusError(f"ConfigMap {self.name} keeps changing under us", status=409)

    def _object(self, data: dict[str, str]) -> dict[str, Any]:
        heartbeat = (time.time(), self._ttl_s) if self._heartbeat else None
        return discovery_object(
            self.name, data=data, holder=self._holder, owner=self._owner, heartbeat=heartbeat
        )

    async def _retry(self, what: str, op: Callable[[], Awaitable[None]]) -> None:
        await retry(what, op, self._rpc_timeout_s)

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
    def _started_informer(self) -> Informer:
        self._started_api()
        if self._informer is None:
            raise UnavailableError("kubernetes discovery is not started")
        return self._informer

    async def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        return await self._started_informer().get_prefix(prefix)

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        async with contextlib.aclosing(self._started_informer().watch(prefix)) as events:
            async for event in events:
                yield event

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
        informer, self._informer = self._informer, None
        if informer is not None:
            await informer.close()
        api, self._api = self._api, None
        if api is not None:
            try:
                await asyncio.wait_for(api.delete(self.name), self._rpc_timeout_s)
            except (DynamoError, TimeoutError) as exc:
                log.warning("could not delete discovery ConfigMap %s: %s", self.name, exc)
            await api.close()
        self._owned.clear()
        self._synced = None
        async with self._flushed:  # release `flush` waiters: there is nothing left to write
            self._written = self._staged
            self._flushed.notify_all()
