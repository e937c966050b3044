"""mem, file and factory discovery: registration, watch add/remove, owner death."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import pytest
from _runtime_helpers import Spawn

from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.discovery.factory import make_discovery
from dynamo.runtime.discovery.file import FileDiscovery
from dynamo.runtime.discovery.kubernetes import KubernetesDiscovery
from dynamo.runtime.discovery.mem import MemoryDiscovery, MemoryStore
from dynamo.runtime.errors import ConfigError


def json_files(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.suffix == ".json"]


async def next_event(it: object, timeout_s: float = 10.0) -> WatchEvent:
    return await asyncio.wait_for(it.__anext__(), timeout_s)  # type: ignore[attr-defined]


async def test_mem_watch_sees_existing_then_changes_and_owner_close() -> None:
    store = MemoryStore()
    a, b = MemoryDiscovery(store), MemoryDiscovery(store)
    await a.start()
    await b.start()
    await a.put("v1/instances/ns/c/e/1", {"x": 1})
    watch = b.watch_prefix("v1/instances/ns/")
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/1", {"x": 1})
    await a.put("v1/instances/ns/c/e/2", {"x": 2})
    await a.put("v1/other/k", {"x": 3})
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/2", {"x": 2})
    await a.close()
    events = {await next_event(watch), await next_event(watch)}
    assert events == {
        WatchEvent("delete", "v1/instances/ns/c/e/1", None),
        WatchEvent("delete", "v1/instances/ns/c/e/2", None),
    }
    assert await b.get_prefix("v1/") == {}
    await watch.aclose()
    await b.close()


async def test_mem_shared_store_is_per_process() -> None:
    a, b = MemoryDiscovery(), MemoryDiscovery()
    await a.put("k/shared", {"v": 1})
    assert await b.get_prefix("k/") == {"k/shared": {"v": 1}}
    await a.close()
    assert await b.get_prefix("k/") == {}


async def test_file_watch_add_and_remove(tmp_path: Path) -> None:
    a = FileDiscovery(tmp_path, ttl_s=5)
    b = FileDiscovery(tmp_path, ttl_s=5)
    await a.start()
    await b.start()
    await a.put("v1/instances/ns/c/e/1", {"x": 1})
    watch = b.watch_prefix("v1/instances/")
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/1", {"x": 1})
    await a.put("v1/instances/ns/c/e/1", {"x": 2})
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/1", {"x": 2})
    await a.delete("v1/instances/ns/c/e/1")
    assert await next_event(watch) == WatchEvent("delete", "v1/instances/ns/c/e/1", None)
    await a.put("v1/instances/ns/c/e/3", {"x": 3})
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/3", {"x": 3})
    await a.close()
    assert await next_event(watch) == WatchEvent("delete", "v1/instances/ns/c/e/3", None)
    await watch.aclose()
    await b.close()


async def test_file_entry_of_stale_heartbeat_is_ignored(tmp_path: Path) -> None:
    a = FileDiscovery(tmp_path, ttl_s=5)
    await a.start()
    await a.put("k/1", {"v": 1})
    (entry,) = json_files(tmp_path)
    os.utime(entry, (0, 0))  # a heartbeat from 1970
    assert await a.get_prefix("k/") == {}
    await a.close()


async def test_file_entry_vanishes_after_kill_9_of_owner(tmp_path: Path, spawn: Spawn) -> None:
    env = {"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(tmp_path)}
    child = await spawn("register", "v1/instances/ns/c/e/abc", env=env)
    watcher = FileDiscovery(tmp_path, ttl_s=30)
    await watcher.start()
    watch = watcher.watch_prefix("v1/instances/")
    event = await next_event(watch)
    assert event == WatchEvent("put", "v1/instances/ns/c/e/abc", {"pid": child.proc.pid})
    child.proc.send_signal(signal.SIGKILL)
    await child.proc.wait()
    assert await next_event(watch) == WatchEvent("delete", "v1/instances/ns/c/e/abc", None)
    assert json_files(tmp_path) == []
    await watch.aclose()
    await watcher.close()


def test_factory_builds_each_backend(tmp_path: Path) -> None:
    cfg = RuntimeConfig(file_kv_root=str(tmp_path))
    assert isinstance(
        make_discovery(dataclasses.replace(cfg, discovery_backend="mem")), MemoryDiscovery
    )
    assert isinstance(make_discovery(cfg), FileDiscovery)
    assert isinstance(
        make_discovery(dataclasses.replace(cfg, discovery_backend="kubernetes")),
        KubernetesDiscovery,
    )
    with pytest.raises(ConfigError, match="unknown discovery backend 'zk'"):
        make_discovery(dataclasses.replace(cfg, discovery_backend="zk"))
    with pytest.raises(ConfigError, match="only http://"):
        make_discovery(
            dataclasses.replace(cfg, discovery_backend="etcd", etcd_endpoints="https://x:1")
        )
