"""TCP request plane: streaming, errors, cancellation, bad peers, back-pressure."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from _runtime_helpers import Endless, Slow, Spawn, count, failing

from dynamo.runtime.errors import (
    InvalidRequestError,
    NotFoundError,
    RemoteError,
    StreamIncompleteError,
    TransportError,
)
from dynamo.runtime.transport.base import RequestContext
from dynamo.runtime.transport.tcp import TcpRequestClient, TcpRequestServer, parse_address


@pytest.fixture
async def server() -> AsyncIterator[TcpRequestServer]:
    srv = TcpRequestServer()
    srv.register("count", count)
    srv.register("failing", failing)
    await srv.start()
    yield srv
    await srv.stop(0)


@pytest.fixture
async def client() -> AsyncIterator[TcpRequestClient]:
    cli = TcpRequestClient()
    yield cli
    await cli.close()


async def collect(it: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item async for item in it]


async def test_streams_items_then_ends(server: TcpRequestServer, client: TcpRequestClient) -> None:
    items = await collect(client.stream(server.address, "count", {"n": 3}, request_id="r1"))
    assert items == [{"i": 0, "rid": "r1"}, {"i": 1, "rid": "r1"}, {"i": 2, "rid": "r1"}]
    assert await collect(client.stream(server.address, "count", {"n": 0}, request_id="r2")) == []


async def test_many_concurrent_streams_share_connections(
    server: TcpRequestServer, client: TcpRequestClient
) -> None:
    results = await asyncio.gather(
        *(
            collect(client.stream(server.address, "count", {"n": k % 5}, request_id=str(k)))
            for k in range(200)
        )
    )
    assert [len(r) for r in results] == [k % 5 for k in range(200)]
    assert all(item["rid"] == str(k) for k, r in enumerate(results) for item in r)
    assert len(client._pools[server.address]) <= 2


async def test_unknown_endpoint_is_not_found_and_server_keeps_serving(
    server: TcpRequestServer, client: TcpRequestClient
) -> None:
    with pytest.raises(NotFoundError, match="no endpoint 'nope'"):
        await collect(client.stream(server.address, "nope", {}, request_id="x"))
    assert len(await collect(client.stream(server.address, "count", {"n": 2}, request_id="y"))) == 2


async def test_handler_errors_reach_the_caller_typed(
    server: TcpRequestServer, client: TcpRequestClient
) -> None:
    seen: list[dict[str, Any]] = []
    with pytest.raises(RemoteError, match="ValueError: boom") as info:
        async for item in client.stream(server.address, "failing", {}, request_id="a"):
            seen.append(item)
    assert seen == [{"i": 0}]
    assert info.value.kind == "internal"
    with pytest.raises(InvalidRequestError, match="max_tokens must be > 0"):
        await collect(client.stream(server.address, "failing", {"bad_request": 1}, request_id="b"))


async def test_cancel_reaches_the_handler(client: TcpRequestClient) -> None:
    handler = Endless()
    srv = TcpRequestServer()
    srv.register("endless", handler.handle)
    await srv.start()
    it = client.stream(srv.address, "endless", {}, request_id="c")
    assert await anext(it) == {"tick": 1}
    await it.aclose()  # caller stops reading
    await asyncio.wait_for(handler.finished.wait(), 10)
    assert handler.seen_stopped == [True]
    assert srv.inflight() == 0
    await srv.stop(0)


async def test_breaking_out_of_the_loop_cancels_the_handler(client: TcpRequestClient) -> None:
    handler = Endless()
    srv = TcpRequestServer()
    srv.register("endless", handler.handle)
    await srv.start()
    async for _ in client.stream(srv.address, "endless", {}, request_id="b"):
        break  # no aclose(): the dropped generator is finalized, which cancels
    await asyncio.wait_for(handler.finished.wait(), 10)
    assert handler.seen_stopped == [True]
    await srv.stop(0)


async def test_cancelled_caller_task_cancels_the_handler(client: TcpRequestClient) -> None:
    handler = Slow()
    srv = TcpRequestServer()
    srv.register("slow", handler.handle)
    await srv.start()
    task = asyncio.create_task(collect(client.stream(srv.address, "slow", {}, request_id="d")))
    await asyncio.wait_for(handler.started.wait(), 10)
    task.cancel()
    await asyncio.wait_for(handler.finished.wait(), 10)
    await srv.stop(0)


def _raw_exchange(address: str, payload: bytes) -> bytes:
    """Send raw bytes to the server and read until it closes the connection."""
    host, port = parse_address(address)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # 0xc1 is never valid msgpack
        struct.pack(">I", 64 * 1024 * 1024),  # over the max frame size
        struct.pack(">I", 3) + msgpack.packb({"a": 1}),  # not an array
        struct.pack(">I", 2) + msgpack.packb([9]),  # unknown message type
    ],
    ids=["garbage", "oversized", "not-array", "unknown-type"],
)
async def test_malformed_frame_closes_only_that_connection(
    payload: bytes, server: TcpRequestServer, client: TcpRequestClient
) -> None:
    assert await asyncio.to_thread(_raw_exchange, server.address, payload) == b""
    assert len(await collect(client.stream(server.address, "count", {"n": 1}, request_id="z"))) == 1


async def test_oversized_request_is_refused_before_sending(server: TcpRequestServer) -> None:
    small = TcpRequestClient(max_frame_bytes=1024)
    with pytest.raises(TransportError, match="exceeds the max frame size 1024"):
        await collect(small.stream(server.address, "count", {"blob": b"x" * 2048}, request_id="o"))
    await small.close()


async def test_unreachable_address_is_a_transport_error(client: TcpRequestClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
    with pytest.raises(TransportError, match="cannot connect"):
        await collect(client.stream(f"tcp://127.0.0.1:{port}", "count", {}, request_id="u"))


async def test_slow_reader_bounds_what_the_server_produces(client: TcpRequestClient) -> None:
    produced = 0

    async def firehose(
        request: dict[str, Any], ctx: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        nonlocal produced
        blob = b"x" * 65536
        while True:
            produced += 1
            yield {"blob": blob}

    srv = TcpRequestServer()
    srv.register("firehose", firehose)
    await srv.start()
    it = client.stream(srv.address, "firehose", {}, request_id="f")
    await anext(it)
    for _ in range(50):  # let the producer run as far as flow control allows
        await asyncio.sleep(0.01)
    # 64 queued frames + 1 MiB write buffer + kernel socket buffers, far below unbounded
    assert produced < 1000
    await it.aclose()
    await srv.stop(0)


async def test_two_processes_stream_and_cancel(spawn: Spawn, client: TcpRequestClient) -> None:
    child = await spawn("serve-tcp")
    address = child.ready[0]
    items = await collect(client.stream(address, "count", {"n": 5}, request_id="p1"))
    assert [i["i"] for i in items] == [0, 1, 2, 3, 4]
    assert {i["pid"] for i in items} == {child.proc.pid}
    it = client.stream(address, "count", {"n": 10**6, "delay_s": 0.01}, request_id="p2")
    await anext(it)
    await it.aclose()
    assert await child.read_line() == "CANCELLED p2 stopped=True"


async def test_peer_vanishing_mid_stream_is_stream_incomplete(
    spawn: Spawn, client: TcpRequestClient
) -> None:
    child = await spawn("serve-tcp")
    address = child.ready[0]
    it = client.stream(address, "count", {"n": 10**6, "delay_s": 0.01}, request_id="v")
    await anext(it)
    child.proc.send_signal(signal.SIGKILL)
    with pytest.raises(StreamIncompleteError, match="before the final frame"):
        async for _ in it:
            pass
    await child.proc.wait()  # fully gone: its listening socket is closed too
    with pytest.raises(TransportError, match="cannot connect"):
        await collect(client.stream(address, "count", {"n": 1}, request_id="w"))


@pytest.mark.parametrize("name", ["count", "late_failure"])
async def test_dropping_a_paused_stream_after_its_end_frame_resumes_the_connection(
    server: TcpRequestServer, name: str
) -> None:
    # The soak's hung requests (issue #16): a stream over its queue bound pauses reading of the
    # whole connection; its FINAL (or ERROR) frame arrived in the same read. The caller then
    # dropped it (its HTTP client left) before reading it down: the connection stayed paused
    # and every later stream on it waited forever.
    server.register("late_failure", _items_then_error)
    cli = TcpRequestClient(pool_size=1, stream_queue_frames=4)
    try:
        it = cli.stream(server.address, name, {"n": 12}, request_id="dropped")
        await anext(it)
        conn = cli._pools[server.address][0]
        for _ in range(200):  # until the end frame is in: the stream left the connection
            if not conn.streams:
                break
            await asyncio.sleep(0.01)
        assert not conn.streams
        await it.aclose()  # dropped with frames still queued
        items = await asyncio.wait_for(
            collect(cli.stream(server.address, "count", {"n": 3}, request_id="next")), 10
        )
        assert [item["i"] for item in items] == [0, 1, 2]
    finally:
        await cli.close()


async def _items_then_error(
    request: dict[str, Any], ctx: RequestContext
) -> AsyncIterator[dict[str, Any]]:
    for i in range(request["n"]):
        yield {"i": i}
    raise InvalidRequestError("late failure")


async def test_a_request_is_on_the_wire_before_the_loop_runs_again(
    client: TcpRequestClient,
) -> None:
    """Opening a stream writes its REQUEST frame at once: a loop held by other work right
    after (a burst of requests being prepared) does not hold the request back."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    got = bytearray()
    arrived = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        with conn:
            while len(got) < 4 or len(got) < 4 + struct.unpack(">I", got[:4])[0]:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                got.extend(chunk)
            arrived.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        host, port = listener.getsockname()
        conn = await client._connection(f"tcp://{host}:{port}")
        conn.open("count", "r1", {"n": 1})
        # no await: the loop does not run until the frame has arrived (or 10 s passed)
        assert arrived.wait(10), "the REQUEST frame waited for the next loop iteration"
    finally:
        await client.close()
        thread.join(10)
        listener.close()
    message = msgpack.unpackb(bytes(got[4:]))
    assert message[0] == 0 and message[2:] == ["count", "r1", {"n": 1}]  # REQUEST
