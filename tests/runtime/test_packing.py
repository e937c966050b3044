"""Request messages: a long prompt packed once for both legs, the bytes exactly msgpack's,
over the TCP and the NATS request plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.frontend.disagg import decode_request, prefill_request
from dynamo.runtime.errors import TransportError
from dynamo.runtime.transport.base import RequestContext
from dynamo.runtime.transport.framing import REQUEST
from dynamo.runtime.transport.nats_request import NatsRequestServer
from dynamo.runtime.transport.nats_request_client import NatsRequestClient
from dynamo.runtime.transport.nats_wire import address_for
from dynamo.runtime.transport.packing import REUSE_MIN_TOKEN_IDS, pack_message
from dynamo.runtime.transport.tcp import TcpRequestClient, TcpRequestServer
from dynamo.testing.servers import NatsServer

pack = msgpack.Packer(use_bin_type=True).pack


def pack_request(pack: Any, sid: int, name: str, rid: str, request: Any) -> bytes:
    """A TCP REQUEST frame's msgpack, as `FramedProtocol.send_request` makes it."""
    return pack_message(pack, [REQUEST, sid, name, rid, request], 4)


def plain(sid: int, request: Any) -> bytes:
    return bytes(pack([REQUEST, sid, "generate", "rid-1", request]))


def engine_request(n: int) -> dict[str, Any]:
    return {
        "request_id": "rid-1",
        "model": "tiny",
        "token_ids": [(i * 7919) % 50_000 for i in range(n)],
        "stop_conditions": {"max_tokens": 16, "min_tokens": None},
        "sampling_options": {"temperature": 0.5, "seed": -3},
        "eos_token_ids": [2],
    }


@pytest.mark.parametrize("n", [0, 5, REUSE_MIN_TOKEN_IDS - 1, REUSE_MIN_TOKEN_IDS, 8192, 70_000])
def test_both_legs_pack_to_msgpacks_own_bytes(n: int) -> None:
    request = engine_request(n)
    room = {"bootstrap_host": "10.0.0.1", "bootstrap_port": 8998, "bootstrap_room": 2**62}
    legs = [prefill_request(request, {"bootstrap_room": 2**62}), decode_request(request, room)]
    for sid, leg in enumerate([*legs, *legs, request], start=1):
        assert pack_request(pack, sid, "generate", "rid-1", leg) == plain(sid, leg)


def test_a_new_list_with_other_ids_is_packed_anew() -> None:
    first = engine_request(4096)
    assert pack_request(pack, 1, "generate", "rid-1", first) == plain(1, first)
    second = {**first, "token_ids": [*first["token_ids"][:-1], 7]}
    assert pack_request(pack, 2, "generate", "rid-1", second) == plain(2, second)
    assert msgpack.unpackb(pack_request(pack, 3, "generate", "rid-1", second))[4] == second


def test_a_map_of_sixteen_or_more_fields() -> None:
    request: dict[str, Any] = {**engine_request(2048), **{f"extra_{i}": i for i in range(20)}}
    assert pack_request(pack, 1, "generate", "rid-1", request) == plain(1, request)


@pytest.mark.parametrize("at", [0, 2, 19])
def test_the_request_anywhere_in_a_message_of_any_length(at: int) -> None:
    request = engine_request(1024)
    message: list[Any] = [f"item {i}" for i in range(20)]
    message[at] = request
    for _ in range(2):
        assert pack_message(pack, message, at) == pack(message)
    nats_like = ["generate", "rid-1", request, 64, 5.0]  # the NATS request message
    assert pack_message(pack, nats_like, 2) == pack(nats_like)


def test_unpackable_ids_fail_and_leave_nothing_cached() -> None:
    bad = {"token_ids": [1] * REUSE_MIN_TOKEN_IDS + [2**65]}
    with pytest.raises(OverflowError):
        pack_request(pack, 1, "generate", "rid-1", bad)
    good = {"token_ids": list(range(REUSE_MIN_TOKEN_IDS))}
    assert pack_request(pack, 2, "generate", "rid-1", good) == plain(2, good)


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=6), values, max_size=20),
    n=st.integers(0, 3 * REUSE_MIN_TOKEN_IDS),
)
def test_any_request_packs_to_msgpacks_own_bytes(fields: dict[str, Any], n: int) -> None:
    request = {**fields, "token_ids": list(range(n))}
    for sid in (1, 2):  # the second time from the reused bytes
        assert pack_request(pack, sid, "generate", "rid-1", request) == plain(sid, request)


async def echo_prompt(
    request: dict[str, Any], ctx: RequestContext
) -> AsyncIterator[dict[str, Any]]:
    yield {"n": len(request["token_ids"]), "sum": sum(request["token_ids"]), "keys": list(request)}


@pytest.fixture
async def server() -> AsyncIterator[TcpRequestServer]:
    srv = TcpRequestServer()
    srv.register("echo", echo_prompt)
    await srv.start()
    yield srv
    await srv.stop(0)


async def test_both_legs_reach_two_servers_over_nats(nats_server: NatsServer) -> None:
    servers = [NatsRequestServer(nats_server.url) for _ in range(2)]
    client = NatsRequestClient(nats_server.url)
    try:
        addresses = []
        for i, srv in enumerate(servers):
            srv.register(f"echo-packing-{i}", echo_prompt)
            await srv.start()
            addresses.append(address_for(srv.subject(f"echo-packing-{i}")))
        request = engine_request(8192)
        want = {"n": 8192, "sum": sum(request["token_ids"])}
        legs = [prefill_request(request), decode_request(request, {"r": 1})]
        for i, (address, leg) in enumerate(zip(addresses, legs, strict=True)):
            it = client.stream(address, f"echo-packing-{i}", leg, request_id="rid-1")
            [got] = [x async for x in it]
            assert {"n": got["n"], "sum": got["sum"]} == want
            assert got["keys"] == list(leg)
    finally:
        await client.close()
        for srv in servers:
            await srv.stop(0)


async def test_both_legs_reach_two_servers_over_tcp(server: TcpRequestServer) -> None:
    other = TcpRequestServer()
    other.register("echo", echo_prompt)
    await other.start()
    client = TcpRequestClient()
    try:
        request = engine_request(8192)
        want = {"n": 8192, "sum": sum(request["token_ids"])}
        legs = [(server, prefill_request(request)), (other, decode_request(request, {"r": 1}))]
        for srv, leg in legs:
            [got] = [x async for x in client.stream(srv.address, "echo", leg, request_id="rid-1")]
            assert {"n": got["n"], "sum": got["sum"]} == want
            assert got["keys"] == list(leg)
        with pytest.raises(TransportError, match="not encodable"):
            bad = {"token_ids": [object()] * REUSE_MIN_TOKEN_IDS}
            [x async for x in client.stream(server.address, "echo", bad, request_id="rid-2")]
    finally:
        await client.close()
        await other.stop(0)
