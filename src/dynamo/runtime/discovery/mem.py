"""In-process discovery: one store per process, shared by every runtime in it.

Each `MemoryDiscovery` owns the keys it puts; closing it deletes them, which is how the
"lease dies with the process" rule maps onto a single process.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.errors import UnavailableError


class MemoryStore:
    """Keys, their owners and the watchers of one process."""

    _default: ClassVar[MemoryStore | None] = None

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, dict[str, Any]]] = {}
        self._watchers: dict[int, tuple[str, asyncio.Queue[WatchEvent]]] = {}
        self._ids = itertools.count(1)

    @classmethod
    def shared(cls) -> MemoryStore:
        """The process-wide store (what `--discovery-backend mem` means)."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def new_owner(self) -> int:
        return next(self._ids)

    def put(self, owner: int, key: str, value: dict[str, Any]) -> None:
        self._entries[key] = (owner, value)
        self._notify(WatchEvent("put", key, value))

    def delete(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            self._notify(WatchEvent("delete", key, None))

    def delete_owned(self, owner: int) -> None:
        for key in [k for k, (o, _) in self._entries.items() if o == owner]:
            self.delete(key)

    def snapshot(self, prefix: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, (_, v) in self._entries.items() if k.startswith(prefix)}

    def add_watcher(self, prefix: str) -> tuple[int, asyncio.Queue[WatchEvent]]:
        """Register a watcher and pre-fill it with the current keys (atomically)."""
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        for key, value in self.snapshot(prefix).items():
            queue.put_nowait(WatchEvent("put", key, value))
        wid = next(self._ids)
        self._watchers[wid] = (prefix, queue)
        return wid, queue

    def remove_watcher(self, wid: int) -> None:
        self._watchers.pop(wid, None)

    def _notify(self, event: WatchEvent) -> None:
        for prefix, queue in self._watchers.values():
            if event.key.startswith(prefix):
                queue.put_nowait(event)


class MemoryDiscovery:
    """`Discovery` over a `MemoryStore` (the shared one unless given)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self._store = store or MemoryStore.shared()
        self._owner = self._store.new_owner()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("mem discovery is closed")

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self._check_open()
        self._store.put(self._owner, key, value)

    async def delete(self, key: str) -> None:
        self._store.delete(key)

    async def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        return self._store.snapshot(prefix)

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        wid, queue = self._store.add_watcher(prefix)
        try:
            while True:
                yield await queue.get()
        finally:
            self._store.remove_watcher(wid)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store.delete_owned(self._owner)
