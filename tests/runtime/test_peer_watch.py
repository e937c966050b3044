"""PeerWatch: a broken request-plane connection marks a peer down at once; a probe brings it
back; the caller's pooled streams to a down peer end incomplete."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _runtime_helpers import Endless, Spawn

from dynamo.runtime.errors import StreamIncompleteError
from dynamo.runtime.transport.base import RequestContext
from dynamo.runtime.transport.peer_watch import (
    KEEPALIVE_PROBES,
    PeerWatch,
    reconnect_delay,
    set_keepalive,
    silent_peer_bound_s,
)
from dynamo.runtime.transport.planes import AnyPlaneClient
from dynamo.runtime.transport.tcp import TcpRequestServer


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll `predicate` (generous bound: this box may be loaded)."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reconnect_delay_doubles_up_to_the_cap_with_jitter() -> None:
    assert reconnect_delay(0, 5.0, lambda: 0.0) == pytest.approx(0.05)
    assert reconnect_delay(0, 5.0, lambda: 1.0) == pytest.approx(0.1)
    assert reconnect_delay(3, 5.0, lambda: 1.0) == pytest.approx(0.8)
    assert reconnect_delay(10, 5.0, lambda: 1.0) == pytest.approx(5.0)
    assert reconnect_delay(10_000, 5.0, lambda: 0.0) == pytest.approx(2.5)


def test_kernel_keepalive_options_on_the_socket() -> None:
    with socket.socket() as sock:
        set_keepalive(sock, 2)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_PROBES
    assert silent_peer_bound_s(1) == 3


async def test_stopping_server_is_down_not_lost_and_a_restart_brings_it_back() -> None:
    port = free_port()
    server = TcpRequestServer(port=port)
    address = await server.start()
    watch = PeerWatch(keepalive_s=1, reconnect_max_s=0.2)
    changes: list[tuple[str, bool]] = []
    watch.subscribe(lambda a, up: changes.append((a, up)))
    try:
        watch.watch(address)
        await until(lambda: len(server._connections) == 1, "the watch connection")
        assert watch.is_up(address)
        await server.stop(0)  # GOAWAY, then close
        await until(lambda: bool(changes), "the peer to go down")
        assert changes == [(address, False)]
        assert not watch.is_up(address)
        assert not watch.is_lost(address)  # refused probes since then do not make it lost
        assert watch.lost_total == 0

        server = TcpRequestServer(port=port)
        await server.start()
        await until(lambda: len(changes) == 2, "a reconnect probe to get through")
        assert changes == [(address, False), (address, True)]
        assert watch.is_up(address)
    finally:
        await watch.close()
        await server.stop(0)


async def test_cut_connection_to_a_live_server_is_lost_then_reconnected() -> None:
    server = TcpRequestServer()
    address = await server.start()
    watch = PeerWatch(keepalive_s=1, reconnect_max_s=0.2)
    changes: list[tuple[str, bool]] = []
    watch.subscribe(lambda a, up: changes.append((a, up)))
    try:
        watch.watch(address)
        await until(lambda: len(server._connections) == 1, "the watch connection")
        (first,) = server._connections
        first.transport.abort()  # type: ignore[union-attr]  # a reset, as a dying link gives
        await until(lambda: len(changes) == 2, "down, then a reconnect")
        assert changes == [(address, False), (address, True)]
        assert watch.lost_total == 1
        assert not watch.is_lost(address)
        assert len(server._connections) == 1 and first not in server._connections
    finally:
        await watch.close()
        await server.stop(0)


async def test_refused_address_is_down_until_unwatched() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens
    watch = PeerWatch(keepalive_s=1, reconnect_max_s=0.1)
    changes: list[tuple[str, bool]] = []
    watch.subscribe(lambda a, up: changes.append((a, up)))
    try:
        watch.watch(address)
        watch.watch(address)
        await until(lambda: not watch.is_up(address), "the first connect to fail")
        assert watch.is_lost(address)
        watch.unwatch(address)
        assert watch.watched() == [address]  # one reference left
        watch.unwatch(address)
        assert watch.watched() == []
        assert watch.is_up(address)  # forgotten, not down
        await asyncio.sleep(0.3)  # several probe periods: no probe reports any more
        assert changes == [(address, False)]
    finally:
        await watch.close()


async def test_an_unwatch_as_the_connect_fails_reports_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The instance is deleted (unwatch) in the same loop turn as the probe's connect is
    refused, as a draining worker's listener closes: the probe ends and reports nothing. With
    `asyncio.wait_for` on 3.11 the refusal won over the cancellation, the unwatched peer was
    reported lost and the caller's streams to that draining worker were cut (a CI failure of
    tests/runtime/test_lifecycle.py)."""
    loop = asyncio.get_running_loop()
    connect: asyncio.Future[Any] = loop.create_future()
    monkeypatch.setattr(loop, "create_connection", lambda *args, **kwargs: connect)
    address = f"tcp://127.0.0.1:{free_port()}"
    watch = PeerWatch(keepalive_s=1, reconnect_max_s=0.1)
    changes: list[tuple[str, bool]] = []
    watch.subscribe(lambda a, up: changes.append((a, up)))
    watch.watch(address)
    (task,) = watch._tasks.values()
    await asyncio.sleep(0)  # the probe now waits on its connect
    connect.set_exception(ConnectionRefusedError(111, "Connect call failed"))
    watch.unwatch(address)
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    assert task.done()
    assert changes == []
    assert watch.lost_total == 0
    await watch.close()


async def test_non_tcp_addresses_are_not_watched() -> None:
    watch = PeerWatch()
    watch.watch("nats:dynamo_rpc.ns.c.e-1")
    assert watch.watched() == []
    assert watch.is_up("nats:dynamo_rpc.ns.c.e-1")
    await watch.close()


async def test_peer_down_ends_open_streams_incomplete() -> None:
    server = TcpRequestServer()
    endless = Endless()
    server.register("ns/c/e/1", endless.handle)
    address = await server.start()
    client = AnyPlaneClient("nats://unused", peer_keepalive_s=1, peer_reconnect_max_s=0.2)
    assert client.peers is not None
    try:
        client.peers.watch(address)
        await until(lambda: len(server._connections) == 1, "the watch connection")
        stream = client.stream(address, "ns/c/e/1", {}, request_id="r1")
        assert await anext(stream) == {"tick": 1}
        # Cut only the idle watch connection: the stream's own connection stays open, so the
        # stream can only end because the watch reported the peer down.
        (watch_conn,) = [c for c in server._connections if not c._tasks]
        watch_conn.close()
        with pytest.raises(StreamIncompleteError, match=r"request-plane peer .* is down"):
            async with asyncio.timeout(30):
                async for _ in stream:
                    pass
    finally:
        await client.close()
        await server.stop(0)


async def test_graceful_stop_leaves_open_streams_running() -> None:
    server = TcpRequestServer()
    release = asyncio.Event()

    async def slow(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
        yield {"i": 0}
        await release.wait()
        yield {"i": 1}

    server.register("ns/c/e/1", slow)
    address = await server.start()
    client = AnyPlaneClient("nats://unused", peer_keepalive_s=1, peer_reconnect_max_s=0.2)
    assert client.peers is not None
    peers = client.peers
    try:
        peers.watch(address)
        await until(lambda: len(server._connections) == 1, "the watch connection")
        stream = client.stream(address, "ns/c/e/1", {}, request_id="r1")
        assert await anext(stream) == {"i": 0}
        stopping = asyncio.create_task(server.stop(30))
        await until(lambda: not peers.is_up(address), "GOAWAY to mark the peer down")
        assert not peers.is_lost(address)
        release.set()
        assert [item async for item in stream] == [{"i": 1}]
        await stopping
    finally:
        await client.close()
        await server.stop(0)


async def test_a_stopped_process_is_not_a_dead_peer_but_its_kill_is(spawn: Spawn) -> None:
    # SIGSTOP freezes the server's event loop for longer than the keepalive bound (3 s at 1 s);
    # its kernel still answers the keepalive probes, so the peer stays up. SIGKILL: down.
    child = await spawn("serve-tcp")
    (address,) = child.ready
    watch = PeerWatch(keepalive_s=1, reconnect_max_s=0.2)
    changes: list[tuple[str, bool]] = []
    watch.subscribe(lambda a, up: changes.append((a, up)))
    try:
        watch.watch(address)
        await asyncio.sleep(0.5)  # connect (a failed connect would show in `changes`)
        child.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(silent_peer_bound_s(1) + 1)
        assert changes == []
        child.proc.send_signal(signal.SIGCONT)
        child.proc.kill()
        await until(lambda: bool(changes), "the killed peer to go down")
        assert changes == [(address, False)]
        assert watch.is_lost(address)
    finally:
        await watch.close()
