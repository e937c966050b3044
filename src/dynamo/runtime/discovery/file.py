"""File discovery: several processes on one machine share a directory of entries.

One JSON file per key holds the value plus its owner (host, pid, process start time). The
owner touches its files every TTL/3 (heartbeat). Readers treat an entry as gone when its
owner process is dead (checked by pid, also after kill -9) or its heartbeat is older than the
TTL, and delete entries of dead owners that share their host and PID namespace. Watches poll
the directory (~0.2 s) and diff it, so no inotify is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from dynamo.runtime.discovery.base import WatchEvent, notify_changes
from dynamo.runtime.errors import ConfigError, UnavailableError
from dynamo.runtime.tasks import wait_event

log = logging.getLogger(__name__)
_SUFFIX = ".json"
_MAX_NAME = 200


def entry_name(key: str) -> str:
    """The file name of `key` (the key itself is stored inside the file)."""
    quoted = quote(key, safe="")
    if len(quoted) > _MAX_NAME:
        quoted = "h-" + hashlib.sha256(key.encode()).hexdigest()
    return quoted + _SUFFIX


def _host_identity() -> str:
    """This host and PID namespace: pids are only comparable within one of these."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return f"{socket.gethostname()}|{pid_ns}"


def _process_start(pid: int) -> float | None:
    """Start time of a live (non-zombie) process, None if it is gone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # exists, owned by someone else: trust the heartbeat


class _Scanner:
    """The blocking directory work (run in a thread)."""

    def __init__(self, root: Path, ttl_s: float, host: str) -> None:
        self.root, self.ttl_s, self.host = root, ttl_s, host

    def scan(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        alive: dict[tuple[int, float], bool] = {}
        found: dict[str, dict[str, Any]] = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return found
        for entry in entries:
            try:
                mtime = entry.stat().st_mtime
                if entry.name.startswith("."):
                    if entry.name.endswith(".tmp") and now - mtime > self.ttl_s:
                        os.unlink(entry.path)  # left by a writer killed mid-write
                    continue
                if not entry.name.endswith(_SUFFIX):
                    continue
                with open(entry.path, "rb") as fh:
                    doc = json.loads(fh.read())
            except (OSError, ValueError):
                continue  # vanished or replaced between listing and reading
            if not isinstance(doc, dict) or not isinstance(doc.get("key"), str):
                continue
            if doc.get("host") == self.host:
                owner = (int(doc.get("pid", 0)), float(doc.get("started", 0.0)))
                if owner not in alive:
                    started = _process_start(owner[0])
                    alive[owner] = started is not None and (
                        started < 0 or abs(started - owner[1]) < 1.0
                    )
                if not alive[owner]:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                    continue
            if now - mtime > self.ttl_s:
                continue  # owner stopped heart-beating (frozen, or on another host and dead)
            found[doc["key"]] = doc.get("value") or {}
        return found

    def write(self, name: str, doc: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_bytes(json.dumps(doc).encode())
        os.replace(tmp, self.root / name)

    def remove(self, name: str, owner: str | None = None) -> None:
        """Delete an entry; with `owner`, only if that owner still holds it."""
        path = self.root / name
        try:
            if owner is not None and json.loads(path.read_bytes()).get("owner") != owner:
                return
            path.unlink()
        except (OSError, ValueError):
            pass

    def touch(self, names: list[str]) -> list[str]:
        """Refresh heartbeats; return the names that no longer exist."""
        missing = []
        for name in names:
            try:
                os.utime(self.root / name)
            except FileNotFoundError:
                missing.append(name)
        return missing


class FileDiscovery:
    """`Discovery` over a directory shared by the processes of one machine."""

    def __init__(self, root: str | Path, *, ttl_s: float = 10.0, poll_s: float = 0.2) -> None:
        if ttl_s <= 0:
            raise ConfigError(f"file discovery ttl must be > 0, got {ttl_s}")
        self._scanner = _Scanner(Path(root), ttl_s, _host_identity())
        self._ttl_s, self._poll_s = ttl_s, poll_s
        self._owner = uuid.uuid4().hex
        self._started_at = psutil.Process().create_time()
        self._owned: dict[str, str] = {}  # key -> file name
        self._view: dict[str, dict[str, Any]] = {}
        self._watchers: dict[int, tuple[str, asyncio.Queue[WatchEvent]]] = {}
        self._next_watcher = 0
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def root(self) -> Path:
        return self._scanner.root

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"file discovery root {str(self.root)!r} unusable: {exc}") from exc
        self._closed = False
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="file-discovery-heartbeat")

    async def put(self, key: str, value: dict[str, Any]) -> None:
        if self._closed:
            raise UnavailableError("file discovery is closed")
        name = entry_name(key)
        doc = {
            "key": key,
            "value": value,
            "owner": self._owner,
            "host": self._scanner.host,
            "pid": os.getpid(),
            "started": self._started_at,
        }
        await asyncio.to_thread(self._scanner.write, name, doc)
        self._owned[key] = name
        self._kick.set()

    async def delete(self, key: str) -> None:
        self._owned.pop(key, None)
        await asyncio.to_thread(self._scanner.remove, entry_name(key))
        self._kick.set()

    async def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        found = await asyncio.to_thread(self._scanner.scan)
        return {k: v for k, v in found.items() if k.startswith(prefix)}

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        async with self._lock:
            await self._refresh()
            for key, value in self._view.items():
                if key.startswith(prefix):
                    queue.put_nowait(WatchEvent("put", key, value))
            wid = self._next_watcher = self._next_watcher + 1
            self._watchers[wid] = (prefix, queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="file-discovery-poll")
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.pop(wid, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._heartbeat, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._heartbeat = self._poller = None
        owned, self._owned = list(self._owned.values()), {}
        for name in owned:
            await asyncio.to_thread(self._scanner.remove, name, self._owner)

    async def _refresh(self) -> None:
        """Rescan and send every difference to the watchers (caller holds the lock)."""
        new = await asyncio.to_thread(self._scanner.scan)
        old, self._view = self._view, new
        notify_changes(old, new, self._watchers.values())

    async def _poll(self) -> None:
        while self._watchers:
            await wait_event(self._kick, self._poll_s)
            self._kick.clear()
            async with self._lock:
                try:
                    await self._refresh()
                except OSError as exc:
                    log.warning("file discovery scan of %s failed: %s", self.root, exc)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            names = list(self._owned.values())
            try:
                missing = set(await asyncio.to_thread(self._scanner.touch, names))
            except OSError as exc:
                log.warning("file discovery heartbeat in %s failed: %s", self.root, exc)
                continue
            if missing:
                log.warning("file discovery: %d entries removed by another process", len(missing))
                self._owned = {k: n for k, n in self._owned.items() if n not in missing}
