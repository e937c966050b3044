"""NATS request plane against a real nats-server: streaming, errors, cancellation, flow
control, dead peers, and the runtime (and mocker + frontend) serving over it."""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import openai
import pytest
from _runtime_helpers import Endless, Slow, Spawn, count, failing

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    RemoteError,
    StreamIncompleteError,
    TransportError,
)
from dynamo.runtime.transport.base import RequestContext
from dynamo.runtime.transport.nats_events import connect_nats
from dynamo.runtime.transport.nats_request import NatsRequestServer
from dynamo.runtime.transport.nats_request_client import NatsRequestClient
from dynamo.runtime.transport.nats_wire import address_for, subject_for
from dynamo.runtime.transport.planes import address_of
from dynamo.testing.processes import Procs, mocker_args
from dynamo.testing.servers import NatsServer


def unique(label: str) -> str:
    """A name no other test (or process) on the shared NATS server serves."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def blob(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    yield {"blob": b"x" * request["size"]}


class Served:
    def __init__(self, server: NatsRequestServer, names: dict[str, str]) -> None:
        self.server = server
        self.names = names

    def address(self, handler: str) -> str:
        return address_for(subject_for(self.names[handler]))


@pytest.fixture
async def served(nats_server: NatsServer) -> AsyncIterator[Served]:
    srv = NatsRequestServer(nats_server.url)
    names = {h: unique(h) for h in ("count", "failing", "blob")}
    srv.register(names["count"], count)
    srv.register(names["failing"], failing)
    srv.register(names["blob"], blob)
    await srv.start()
    yield Served(srv, names)
    await srv.stop(0)


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[NatsRequestClient]:
    cli = NatsRequestClient(nats_server.url)
    yield cli
    await cli.close()


async def collect(it: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item async for item in it]


async def serve_one(url: str, handler: Any) -> tuple[NatsRequestServer, str, str]:
    srv = NatsRequestServer(url)
    name = unique("h")
    srv.register(name, handler)
    await srv.start()
    return srv, name, address_for(srv.subject(name))


def test_subjects_and_addresses() -> None:
    assert subject_for("ns/backend/generate/1f") == "dynamo_rpc.ns.backend.generate-1f"
    assert subject_for("count") == "dynamo_rpc.count"
    with pytest.raises(ConfigError, match="cannot be a NATS subject"):
        subject_for("ns/a.b/generate/1")
    assert address_of({"nats": "dynamo_rpc.a.b.c-1"}) == "nats:dynamo_rpc.a.b.c-1"
    assert address_of({"tcp": "127.0.0.1:5"}) == "tcp://127.0.0.1:5"
    both = {"tcp": "127.0.0.1:5", "nats": "s"}
    assert (address_of(both, "nats"), address_of(both, "tcp")) == ("nats:s", "tcp://127.0.0.1:5")
    assert address_of({"http": "x"}) is None


async def test_streams_items_then_ends(served: Served, client: NatsRequestClient) -> None:
    name, address = served.names["count"], served.address("count")
    items = await collect(client.stream(address, name, {"n": 3}, request_id="r1"))
    assert items == [{"i": 0, "rid": "r1"}, {"i": 1, "rid": "r1"}, {"i": 2, "rid": "r1"}]
    assert await collect(client.stream(address, name, {"n": 0}, request_id="r2")) == []
    long = await collect(client.stream(address, name, {"n": 1000}, request_id="r3"))
    assert [item["i"] for item in long] == list(range(1000))  # many credit round trips


async def test_many_concurrent_streams(served: Served, client: NatsRequestClient) -> None:
    name, address = served.names["count"], served.address("count")
    results = await asyncio.gather(
        *(
            collect(client.stream(address, name, {"n": k % 5}, request_id=str(k)))
            for k in range(200)
        )
    )
    assert [len(r) for r in results] == [k % 5 for k in range(200)]
    assert all(item["rid"] == str(k) for k, r in enumerate(results) for item in r)
    assert served.server.inflight() == 0


async def test_no_responders_and_unknown_endpoint(
    served: Served, client: NatsRequestClient
) -> None:
    with pytest.raises(TransportError, match=r"no responders on NATS subject 'dynamo_rpc\.nope"):
        await collect(client.stream(address_for("dynamo_rpc.nope-1"), "x", {}, request_id="a"))
    with pytest.raises(NotFoundError, match=r"no endpoint 'other' on dynamo_rpc\.count-"):
        await collect(client.stream(served.address("count"), "other", {}, request_id="b"))
    served.server.unregister(served.names["count"])
    await served.server.ready()
    with pytest.raises(TransportError, match="no responders"):
        await collect(
            client.stream(served.address("count"), served.names["count"], {"n": 1}, request_id="c")
        )
    name, address = served.names["blob"], served.address("blob")  # still serving the others
    assert await collect(client.stream(address, name, {"size": 1}, request_id="d")) == [
        {"blob": b"x"}
    ]


async def test_handler_errors_reach_the_caller_typed(
    served: Served, client: NatsRequestClient
) -> None:
    name, address = served.names["failing"], served.address("failing")
    seen: list[dict[str, Any]] = []
    with pytest.raises(RemoteError, match="ValueError: boom") as info:
        async for item in client.stream(address, name, {}, request_id="a"):
            seen.append(item)
    assert seen == [{"i": 0}]
    assert info.value.kind == "internal"
    with pytest.raises(InvalidRequestError, match="max_tokens must be > 0"):
        await collect(client.stream(address, name, {"bad_request": 1}, request_id="b"))


async def test_payloads_over_max_payload(served: Served, client: NatsRequestClient) -> None:
    name, address = served.names["blob"], served.address("blob")
    with pytest.raises(TransportError, match=r"request of \d+ bytes exceeds .* max_payload"):
        await collect(
            client.stream(address, name, {"size": 0, "pad": b"x" * (2 << 20)}, request_id="a")
        )
    with pytest.raises(RemoteError, match=r"response frame of \d+ bytes exceeds") as info:
        await collect(client.stream(address, name, {"size": 2 << 20}, request_id="b"))
    assert info.value.kind == "payload_too_large"
    assert await collect(client.stream(address, name, {"size": 3}, request_id="c")) == [
        {"blob": b"xxx"}
    ]


async def test_cancel_reaches_the_handler(
    nats_server: NatsServer, client: NatsRequestClient
) -> None:
    handler = Endless()
    srv, name, address = await serve_one(nats_server.url, handler.handle)
    it = client.stream(address, name, {}, request_id="c")
    assert await anext(it) == {"tick": 1}
    await it.aclose()  # the caller stops reading
    await asyncio.wait_for(handler.finished.wait(), 10)
    assert handler.seen_stopped == [True]
    assert srv.inflight() == 0
    await srv.stop(0)


async def test_cancelled_caller_task_cancels_the_handler(
    nats_server: NatsServer, client: NatsRequestClient
) -> None:
    handler = Slow()
    srv, name, address = await serve_one(nats_server.url, handler.handle)
    task = asyncio.create_task(collect(client.stream(address, name, {}, request_id="d")))
    await asyncio.wait_for(handler.started.wait(), 10)
    task.cancel()
    await asyncio.wait_for(handler.finished.wait(), 10)
    await srv.stop(0)


async def test_slow_reader_bounds_what_the_server_produces(nats_server: NatsServer) -> None:
    produced = 0
    window_full = asyncio.Event()

    async def firehose(
        request: dict[str, Any], ctx: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        nonlocal produced
        while True:
            produced += 1
            if produced == 17:  # the window of 16, then one more held while out of credit
                window_full.set()
            yield {"n": produced}

    srv, name, address = await serve_one(nats_server.url, firehose)
    cli = NatsRequestClient(nats_server.url, stream_window_frames=16, keepalive_s=0.1)
    it = cli.stream(address, name, {}, request_id="f")
    assert await anext(it) == {"n": 1}
    await asyncio.wait_for(window_full.wait(), 10)
    await asyncio.sleep(1.0)  # ten keepalive intervals: the reader's pings keep it waiting
    assert produced == 17
    assert srv.inflight() == 1
    got = [await anext(it) for _ in range(100)]  # reading on grants more credit
    assert [g["n"] for g in got] == list(range(2, 102))
    await it.aclose()
    await cli.close()
    await srv.stop(0)


async def test_a_caller_that_vanishes_is_given_up(nats_server: NatsServer) -> None:
    """A caller that never credits nor answers (it died) frees the handler."""
    handler = Endless(pause_s=None)
    srv, name, address = await serve_one(nats_server.url, handler.handle)
    raw = await connect_nats(nats_server.url)
    inbox = raw.new_inbox()
    frames = await raw.subscribe(inbox)
    request = msgpack.packb([name, "gone", {}, 4, 0.1])
    await raw.publish(address.removeprefix("nats:"), request, reply=inbox)
    await asyncio.wait_for(handler.finished.wait(), 10)
    assert handler.seen_stopped == [True] and srv.inflight() == 0
    received = [msgpack.unpackb((await frames.next_msg(5)).data) for _ in range(8)]
    # the window of 4 DATA frames, 3 unanswered KEEPALIVEs while out of credit, then ERROR
    assert [m[0] for m in received] == [2, 2, 2, 2, 5, 5, 5, 3]
    assert received[-1] == [3, "stream_incomplete", "the caller stopped answering"]
    await raw.close()
    await srv.stop(0)


async def test_malformed_request_is_refused_and_server_keeps_serving(
    served: Served, client: NatsRequestClient
) -> None:
    raw = await connect_nats(served.server.url)
    inbox = raw.new_inbox()
    replies = await raw.subscribe(inbox)
    subject = served.address("count").removeprefix("nats:")
    await raw.publish(subject, b"\xc1\xc1", reply=inbox)  # 0xc1 is never valid msgpack
    reply = msgpack.unpackb((await replies.next_msg(5)).data)
    assert reply == [3, "invalid_request", f"malformed request on {subject}"]
    await raw.publish(subject, msgpack.packb([served.names["count"], "r", {}, 0, 1.0]), reply=inbox)
    assert msgpack.unpackb((await replies.next_msg(5)).data)[1] == "invalid_request"  # window 0
    await raw.close()
    name = served.names["count"]
    assert (
        len(await collect(client.stream(served.address("count"), name, {"n": 2}, request_id="y")))
        == 2
    )


async def test_a_cancel_that_overtakes_its_request(nats_server: NatsServer) -> None:
    started: list[str] = []

    async def record(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
        started.append(ctx.request_id)
        yield {}

    srv, name, address = await serve_one(nats_server.url, record)
    subject = address.removeprefix("nats:")
    raw = await connect_nats(nats_server.url)
    inbox = raw.new_inbox()
    replies = await raw.subscribe(inbox)
    await raw.publish(f"{subject}.ctl", msgpack.packb([1, inbox]))
    await raw.flush()
    for _ in range(500):  # until the server has seen the cancel
        if inbox in srv._early_cancels:
            break
        await asyncio.sleep(0.01)
    await raw.publish(subject, msgpack.packb([name, "late", {}, 4, 1.0]), reply=inbox)
    await raw.publish(subject, msgpack.packb([name, "next", {}, 4, 1.0]), reply=inbox + "x")
    await raw.flush()
    for _ in range(500):
        if started:
            break
        await asyncio.sleep(0.01)
    assert started == ["next"]
    with pytest.raises(TimeoutError):
        await replies.next_msg(0.2)  # the cancelled request got no answer
    await raw.close()
    await srv.stop(0)


async def test_unreachable_nats_is_a_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
    cli = NatsRequestClient(f"nats://127.0.0.1:{port}")
    with pytest.raises(TransportError, match="cannot connect to NATS"):
        await collect(cli.stream("nats:dynamo_rpc.x", "x", {}, request_id="u"))
    await cli.close()
    with pytest.raises(TransportError, match="cannot connect to NATS"):
        await NatsRequestServer(f"nats://127.0.0.1:{port}").start()


async def test_stop_ends_in_flight_streams_as_incomplete(
    nats_server: NatsServer, client: NatsRequestClient
) -> None:
    async def slow(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
        yield {"first": True}
        await asyncio.sleep(3600)
        yield {}

    srv, name, address = await serve_one(nats_server.url, slow)
    it = client.stream(address, name, {}, request_id="s")
    assert await anext(it) == {"first": True}
    await srv.stop(0)
    with pytest.raises(StreamIncompleteError, match="the server shut down"):
        await anext(it)
    with pytest.raises(TransportError, match="no responders"):
        await collect(client.stream(address, name, {}, request_id="t"))


async def test_two_processes_stream_and_cancel(
    spawn: Spawn, nats_server: NatsServer, client: NatsRequestClient
) -> None:
    name = unique("count")
    child = await spawn("serve-nats", name, env={"NATS_SERVER": nats_server.url})
    address = address_for(child.ready[0])
    items = await collect(client.stream(address, name, {"n": 5}, request_id="p1"))
    assert [i["i"] for i in items] == [0, 1, 2, 3, 4]
    assert {i["pid"] for i in items} == {child.proc.pid}
    it = client.stream(address, name, {"n": 10**6, "delay_s": 0.01}, request_id="p2")
    await anext(it)
    await it.aclose()
    assert await child.read_line() == "CANCELLED p2 stopped=True"


async def test_peer_killed_mid_stream_is_stream_incomplete(
    spawn: Spawn, nats_server: NatsServer
) -> None:
    name = unique("count")
    child = await spawn("serve-nats", name, env={"NATS_SERVER": nats_server.url})
    address = address_for(child.ready[0])
    cli = NatsRequestClient(nats_server.url, keepalive_s=0.2)
    it = cli.stream(address, name, {"n": 10**6, "delay_s": 0.01}, request_id="v")
    await anext(it)
    child.proc.send_signal(signal.SIGKILL)
    with pytest.raises(StreamIncompleteError, match="before the final frame"):
        async for _ in it:
            pass
    await child.proc.wait()
    with pytest.raises(TransportError, match="no responders"):  # its subscription is gone
        await collect(cli.stream(address, name, {"n": 1}, request_id="w"))
    await cli.close()


async def echo(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    for token in request["tokens"]:
        yield {"token": token}


async def test_runtime_serves_over_nats_and_tcp_callers_reach_it(nats_server: NatsServer) -> None:
    base = RuntimeConfig(
        namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem", nats_server=nats_server.url
    )
    worker = await DistributedRuntime.create(
        RuntimeConfig(**{**base.__dict__, "request_plane": "nats"})
    )
    caller = await DistributedRuntime.create(base)  # its own plane is tcp
    address = EndpointAddress(base.namespace, "backend", "generate")
    served = await worker.serve_endpoint(address, echo)
    assert worker.server_address == nats_server.url
    info = await worker.discovery.get_prefix(f"v1/instances/{address.path}/")
    subject = f"dynamo_rpc.{base.namespace}.backend.generate-{served.instance_id:x}"
    assert info[served.instance_key]["transport"] == {"nats": subject}
    client = caller.client(address)
    assert await client.wait_for_instances(5) == [served.instance_id]
    assert client.transport_address(served.instance_id) == f"nats:{subject}"
    got = [
        i
        async for i in client.generate(
            {"tokens": [7, 8]}, instance_id=served.instance_id, request_id="r"
        )
    ]
    assert got == [{"token": 7}, {"token": 8}]
    await worker.shutdown(0)
    with pytest.raises(TransportError, match="no responders"):
        await collect(
            caller.request_client.stream(f"nats:{subject}", served.name, {}, request_id="x")
        )
    await caller.shutdown(0)


async def test_runtime_worker_process_over_nats(
    tmp_path: Path, spawn: Spawn, nats_server: NatsServer
) -> None:
    namespace = f"ns{uuid.uuid4().hex[:8]}"
    env = {
        "DYN_NAMESPACE": namespace,
        "DYN_FILE_KV": str(tmp_path),
        "DYN_REQUEST_PLANE": "nats",
        "NATS_SERVER": nats_server.url,
        "DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "60",
    }
    child = await spawn("serve-runtime", env=env)
    instance_id = int(child.ready[0], 16)
    assert child.ready[1] == nats_server.url
    caller = await DistributedRuntime.create(
        RuntimeConfig(
            namespace=namespace,
            file_kv_root=str(tmp_path),
            request_plane="nats",
            nats_server=nats_server.url,
        )
    )
    client = caller.client(EndpointAddress(namespace, "worker", "generate"))
    assert await client.wait_for_instances(10) == [instance_id]
    items = [i async for i in client.generate({"n": 3}, instance_id=instance_id, request_id="a")]
    assert [i["i"] for i in items] == [0, 1, 2]
    assert {i["pid"] for i in items} == {child.proc.pid}
    it = client.generate({"n": 100, "delay_s": 0.01}, instance_id=instance_id, request_id="b")
    await anext(it)
    child.proc.send_signal(signal.SIGTERM)  # graceful: the in-flight stream still completes
    assert len([i async for i in it]) == 99
    assert await child.read_line() == "EXIT 0"
    await caller.shutdown(0)


@pytest.mark.slow
async def test_mocker_and_frontend_over_nats(nats_server: NatsServer, procs: Procs) -> None:
    nats = ("--request-plane", "nats", "--nats-server", nats_server.url)
    url = await procs.frontend(*nats)
    procs.drain(await procs.spawn(*mocker_args(*nats, model_name="tiny", speedup_ratio=None)))
    instances = await procs.wait_for_instances(url, 1)
    assert len(instances) == 1
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    try:
        stream = await client.completions.create(
            model="tiny", prompt="hello over nats", max_tokens=12, stream=True
        )
        chunks = [c async for c in stream if c.choices]
        assert sum(1 for c in chunks if c.choices[0].text) >= 1
        assert chunks[-1].choices[0].finish_reason == "length"
    finally:
        await client.close()
