"""etcd discovery against a real etcd: registration, watch, lease expiry, etcd restart."""

from __future__ import annotations

import asyncio
import random
import signal

from _runtime_helpers import Spawn

from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.discovery.etcd import EtcdDiscovery
from dynamo.testing.servers import EtcdServer

TTL_S = 2.0


async def next_event(it: object, timeout_s: float = 20.0) -> WatchEvent:
    return await asyncio.wait_for(it.__anext__(), timeout_s)  # type: ignore[attr-defined]


async def test_register_watch_and_close_removes_keys(etcd_server: EtcdServer) -> None:
    owner = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    reader = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    await owner.start()
    await reader.start()
    await owner.put("t1/instances/a", {"n": 1})
    assert await reader.get_prefix("t1/") == {"t1/instances/a": {"n": 1}}
    watch = reader.watch_prefix("t1/instances/")
    assert await next_event(watch) == WatchEvent("put", "t1/instances/a", {"n": 1})
    await owner.put("t1/instances/b", {"n": 2})
    assert await next_event(watch) == WatchEvent("put", "t1/instances/b", {"n": 2})
    await owner.delete("t1/instances/a")
    assert await next_event(watch) == WatchEvent("delete", "t1/instances/a", None)
    await owner.close()  # revokes the lease
    assert await next_event(watch) == WatchEvent("delete", "t1/instances/b", None)
    await watch.aclose()
    await reader.close()


async def test_lease_expiry_removes_killed_process(etcd_server: EtcdServer, spawn: Spawn) -> None:
    env = {
        "DYN_DISCOVERY_BACKEND": "etcd",
        "ETCD_ENDPOINTS": etcd_server.url,
        "DYN_LEASE_TTL_S": str(TTL_S),
    }
    child = await spawn("register", "t2/instances/x", env=env)
    reader = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    await reader.start()
    watch = reader.watch_prefix("t2/")
    assert await next_event(watch) == WatchEvent("put", "t2/instances/x", {"pid": child.proc.pid})
    child.proc.send_signal(signal.SIGKILL)
    await child.proc.wait()
    # etcd's minimum lease TTL is a few seconds; the key must go once the lease lapses
    assert await next_event(watch, 3 * TTL_S + 5) == WatchEvent("delete", "t2/instances/x", None)
    await watch.aclose()
    await reader.close()


async def test_reregisters_after_etcd_restart_with_data_lost(etcd_server: EtcdServer) -> None:
    owner = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    await owner.start()
    await owner.put("t3/instances/a", {"n": 1})
    first_lease = owner.lease_id
    await asyncio.to_thread(etcd_server.restart, wipe=True)
    reader = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    await reader.start()
    watch = reader.watch_prefix("t3/")
    # a fresh etcd knows nothing; the owner's keep-alive fails, it re-grants and re-puts
    assert await next_event(watch, 30) == WatchEvent("put", "t3/instances/a", {"n": 1})
    assert owner.lease_id != first_lease
    await owner.close()
    assert await next_event(watch) == WatchEvent("delete", "t3/instances/a", None)
    await watch.aclose()
    await reader.close()


async def test_a_put_after_etcd_lost_its_data_regrants_the_lease(etcd_server: EtcdServer) -> None:
    """A put made after etcd lost its data, before the keep-alive noticed (a long TTL), finds
    its lease unknown: it grants a new lease and puts the key (and every other owned key)
    at once, instead of failing with "requested lease not found"."""
    owner = EtcdDiscovery(etcd_server.url, ttl_s=60.0, rpc_timeout_s=3.0)
    await owner.start()
    await owner.put("t7/a", {"n": 1})
    first_lease = owner.lease_id
    await asyncio.to_thread(etcd_server.restart, wipe=True)
    await owner.put("t7/b", {"n": 2})
    assert owner.lease_id != first_lease
    assert await owner.get_prefix("t7/") == {"t7/a": {"n": 1}, "t7/b": {"n": 2}}
    await owner.close()
    reader = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    await reader.start()
    assert await reader.get_prefix("t7/") == {}  # the new lease was revoked on close
    await reader.close()


async def test_a_watch_keeps_keys_their_owner_puts_back_after_etcd_lost_its_data(
    etcd_server: EtcdServer,
) -> None:
    """A watch that breaks on an etcd restart with its data lost re-reads the prefix before
    its owner's keep-alive put the key back: it waits for the key (up to a TTL) instead of
    reporting it deleted, so a frontend does not drop a live worker for that moment."""
    owner = EtcdDiscovery(etcd_server.url, ttl_s=6.0)  # keep-alive every 2 s notices the loss
    reader = EtcdDiscovery(etcd_server.url, ttl_s=30.0)  # the reader's TTL bounds the wait
    await owner.start()
    await reader.start()
    watch = reader.watch_prefix("t6/")
    await owner.put("t6/a", {"n": 1})
    assert await next_event(watch) == WatchEvent("put", "t6/a", {"n": 1})
    events: list[WatchEvent] = []

    async def follow() -> None:
        while True:
            events.append(await next_event(watch, 60))

    follower = asyncio.create_task(follow())
    await asyncio.to_thread(etcd_server.restart, wipe=True)
    async with asyncio.timeout(30):  # the owner's keep-alive re-grants and puts a back
        while "t6/a" not in await owner.get_prefix("t6/"):  # noqa: ASYNC110 (polls etcd)
            await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the reader's resync has seen it too
    assert all(e.kind == "put" for e in events), events  # a was never reported gone
    await owner.close()
    async with asyncio.timeout(20):
        while WatchEvent("delete", "t6/a", None) not in events:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    await watch.aclose()
    await reader.close()


async def test_watch_survives_etcd_restart(etcd_server: EtcdServer) -> None:
    owner = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    reader = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    await owner.start()
    await reader.start()
    watch = reader.watch_prefix("t4/")
    await owner.put("t4/a", {"n": 1})
    assert await next_event(watch) == WatchEvent("put", "t4/a", {"n": 1})
    await asyncio.to_thread(etcd_server.restart)
    await owner.put("t4/b", {"n": 2})
    assert await next_event(watch, 30) == WatchEvent("put", "t4/b", {"n": 2})
    await owner.close()
    deleted = {await next_event(watch), await next_event(watch)}
    assert deleted == {WatchEvent("delete", "t4/a", None), WatchEvent("delete", "t4/b", None)}
    await watch.aclose()
    await reader.close()


async def test_a_cancelled_watch_always_ends(etcd_server: EtcdServer) -> None:
    """Cancelled at random moments (during the snapshot read, the watch creation or the wait
    for events), a watching task ends every time. On Python 3.11 aetcd's watch creation
    could swallow the cancellation and the task waited on its watch forever (1 in ~30 here)."""
    store = EtcdDiscovery(etcd_server.url, ttl_s=TTL_S)
    await store.start()
    rng = random.Random(7)

    async def watch_forever() -> None:
        async for _ in store.watch_prefix("t9/"):
            pass

    try:
        for attempt in range(300):
            task = asyncio.create_task(watch_forever())
            await asyncio.sleep(rng.uniform(0, 0.01))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=10)
            assert done, f"attempt {attempt}: the cancelled watch is still running: {task!r}"
            assert task.cancelled()
    finally:
        await store.close()
