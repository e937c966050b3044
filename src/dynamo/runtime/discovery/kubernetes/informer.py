"""The reading side of Kubernetes discovery: one list + watch of the discovery ConfigMaps and
one of the discovery Services' EndpointSlices per process, the live view built from both, and
the watchers it feeds.

A record written from a pod is live while its pod is Ready in some slice; a record written
outside any pod is live while its heartbeat is current. The view diffs into watch events; a
broken watch (or 410 Gone) lists again. Records whose heartbeat stopped long ago are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from dynamo.runtime.discovery.base import WatchEvent, notify_changes
from dynamo.runtime.discovery.kubernetes.api import ConfigMapClient, KubeStatusError
from dynamo.runtime.discovery.kubernetes.objects import (
    DiscoveryRecord,
    Freshness,
    parse_record,
    pod_is_ready,
    ready_index,
    ready_pods,
)
from dynamo.runtime.discovery.kubernetes.retry import RBAC_HINT, retry
from dynamo.runtime.retry import Backoff

log = logging.getLogger(__name__)
CONFIGMAPS, SLICES = "configmaps", "endpointslices"


class Informer:
    """The live view of one namespace's discovery records, and prefix watches of it."""

    def __init__(
        self,
        api: ConfigMapClient,
        *,
        ttl_s: float,
        own_name: str,
        rpc_timeout_s: float,
        watch_restart_s: float,
    ) -> None:
        self._api, self._ttl_s, self._own_name = api, ttl_s, own_name
        self._rpc_timeout_s, self._watch_restart_s = rpc_timeout_s, watch_restart_s
        self._objects: dict[str, DiscoveryRecord] = {}
        self._slices: dict[str, frozenset[tuple[str, str]]] = {}
        self._ready: dict[str, frozenset[str]] = {}
        self._freshness = Freshness()
        self._view: dict[str, dict[str, Any]] = {}
        self._in_view: set[str] = set()  # names of the objects `_view` was built from
        self._watchers: dict[int, tuple[str, asyncio.Queue[WatchEvent]]] = {}
        self._next_watcher = 0
        self._listed = {CONFIGMAPS: asyncio.Event(), SLICES: asyncio.Event()}
        self._tasks: list[asyncio.Task[None]] = []
        self._collect_tried: set[tuple[str, float]] = set()
        self._may_collect = True

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._inform(CONFIGMAPS), name="kube-discovery-watch-records"),
            asyncio.create_task(self._inform(SLICES), name="kube-discovery-watch-slices"),
            asyncio.create_task(self._sweep(), name="kube-discovery-sweep"),
        ]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for listed in self._listed.values():
            listed.clear()

    # ------------------------------------------------------------------ one-off reads
    async def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        items, _ = await retry("list", lambda: self._api.list(CONFIGMAPS), self._rpc_timeout_s)
        slices, _ = await retry(
            "list endpointslices", lambda: self._api.list(SLICES), self._rpc_timeout_s
        )
        records = [r for obj in items if (r := self._ingest(obj)) is not None]
        if not self.running:
            self._freshness.forget({r.name for r in records})
        ready = ready_index(ready_pods(obj) for obj in slices)
        entries = self._entries(self._live(records, ready))
        return {k: v for k, v in entries.items() if k.startswith(prefix)}

    # ------------------------------------------------------------------ watches
    async def watch(self, prefix: str) -> AsyncGenerator[WatchEvent, None]:
        self.start()
        for listed in self._listed.values():
            await listed.wait()
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

    async def _inform(self, watched: str) -> None:
        """List, then watch from the list's version; list again when the watch breaks."""
        backoff, failing = Backoff(), False
        while True:
            try:
                items, version = await self._api.list(watched)
                self._load(watched, items)
                self._listed[watched].set()
                if failing:
                    log.info("kubernetes discovery watch of %s resynchronised", watched)
                backoff.reset()
                failing = False
                while True:
                    version = await self._watch_session(watched, version)
            except KubeStatusError as exc:
                if exc.status == 410:
                    log.info("kubernetes discovery watch expired; listing again")
                    continue
                if exc.status in (401, 403):
                    # Watchers must not hang on a missing permission: they see what is visible.
                    self._listed[watched].set()
                    if not failing:
                        log.warning("kubernetes discovery may not watch (%s); %s", exc, RBAC_HINT)
                elif not failing:
                    log.warning("kubernetes discovery watch broke (%s); retrying", exc)
                failing = True
            except Exception:  # a malformed reply must not end discovery for this process
                log.exception("kubernetes discovery watch failed; listing again")
                failing = True
            await backoff.sleep()

    async def _watch_session(self, watched: str, version: str | None) -> str | None:
        """Apply watch events until the session limit (a silently dead connection cannot
        hang the watch for longer); return the version to resume from."""
        with contextlib.suppress(TimeoutError):
            async with (
                asyncio.timeout(self._watch_restart_s),
                contextlib.aclosing(self._api.watch(version, watched)) as events,
            ):
                async for kind, obj in events:
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    name = meta.get("name")
                    if kind == "BOOKMARK" or not name:
                        continue
                    if watched == CONFIGMAPS:
                        self._apply_record(name, None if kind == "DELETED" else obj)
                    else:
                        self._apply_slice(name, None if kind == "DELETED" else obj)
        return version

    def _load(self, watched: str, items: list[dict[str, Any]]) -> None:
        if watched == CONFIGMAPS:
            self._objects = {r.name: r for obj in items if (r := self._ingest(obj))}
            self._freshness.forget(set(self._objects))
        else:
            named = ((obj.get("metadata") or {}).get("name") for obj in items)
            self._slices = {n: ready_pods(obj) for n, obj in zip(named, items, strict=True) if n}
            self._ready = ready_index(self._slices.values())
        self._publish()

    def _apply_record(self, name: str, obj: dict[str, Any] | None) -> None:
        """One watched record change; a mere heartbeat of a live owner changes no entry, so
        it skips the view recomputation."""
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

    def _apply_slice(self, name: str, obj: dict[str, Any] | None) -> None:
        if obj is None:
            self._slices.pop(name, None)
        else:
            self._slices[name] = ready_pods(obj)
        ready = ready_index(self._slices.values())
        if ready != self._ready:
            self._ready = ready
            self._publish()

    # ------------------------------------------------------------------ the view
    def _ingest(self, obj: dict[str, Any]) -> DiscoveryRecord | None:
        record = parse_record(obj, self._ttl_s)
        if record is not None:
            self._freshness.observe(record, time.monotonic(), time.time())
        return record

    def _live(
        self, records: Iterable[DiscoveryRecord], ready: dict[str, frozenset[str]]
    ) -> list[DiscoveryRecord]:
        """Records of Ready pods and of current heartbeats, by name (later names win a key)."""
        now = time.monotonic()

        def alive(record: DiscoveryRecord) -> bool:
            if record.pod is not None:
                return pod_is_ready(record.pod, ready)
            return self._freshness.alive(record.name, now)

        return sorted(filter(alive, records), key=lambda r: r.name)

    @staticmethod
    def _entries(records: Iterable[DiscoveryRecord]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for record in records:
            out.update(record.entries)
        return out

    def _publish(self) -> None:
        """Recompute the live view and send every difference to the watchers."""
        live = self._live(self._objects.values(), self._ready)
        self._in_view = {r.name for r in live}
        new = self._entries(live)
        old, self._view = self._view, new
        notify_changes(old, new, self._watchers.values())

    async def _sweep(self) -> None:
        """Expire entries whose heartbeat lapsed (no event announces that) and delete the
        objects of owners that are long gone; paced by the shortest TTL any writer declares."""
        while True:
            heartbeats = [r.ttl_s for r in self._objects.values() if r.renew_s is not None]
            await asyncio.sleep(max(0.05, min([self._ttl_s, *heartbeats]) / 4))
            self._publish()
            if self._may_collect:
                await self._collect_stale()

    async def _collect_stale(self) -> None:
        now = time.monotonic()
        for name in list(self._objects):
            stale = self._freshness.collectable(name, now)
            if name == self._own_name or stale is None or (name, stale) in self._collect_tried:
                continue
            self._collect_tried.add((name, stale))
            try:
                current = await self._api.get(name)
                record = parse_record(current, self._ttl_s) if current is not None else None
                if record is not None and record.renew_s == stale and await self._api.delete(name):
                    log.info("deleted discovery ConfigMap %s: its heartbeat stopped", name)
            except KubeStatusError as exc:
                if exc.status == 403:
                    self._may_collect = False
                    log.info("may not delete stale discovery ConfigMaps (%s); ignoring them", exc)
                    return
                log.debug("could not delete stale discovery ConfigMap %s: %s", name, exc)
