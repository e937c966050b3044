"""vLLM KV event batches (as vLLM 0.32 and older vLLM / SGLang encode them) in our schema."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from dynamo.engines.zmq_kv_events import (
    KvEventConverter,
    KvEventFormatError,
    convert_event,
    decode_batch,
    external_hash,
)
from dynamo.engines.zmq_kv_subscriber import (
    ZmqKvEventSubscriber,
    free_tcp_port,
    publisher_binds,
    subscriber_address,
)
from dynamo.protocols.hashing import block_hashes, salted_seed
from dynamo.protocols.kv_events import KvCacheEvent, KvCleared, KvRemoved, KvStored, StoredBlock
from dynamo.testing.engine_sink import RecordingEngineSink

TOKENS = list(range(100, 164))  # two blocks of 32


def stored_map(**over: Any) -> dict[str, Any]:
    ev = {
        "type": "BlockStored",
        "block_hashes": [11, 22],
        "parent_block_hash": None,
        "token_ids": TOKENS,
        "block_size": 32,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
        "extra_keys": [None, None],
        "group_idx": 0,
        "kv_cache_spec_kind": "full_attention",
    }
    ev.update(over)
    return ev


def batch(events: list[Any], dp_rank: int | None = 0) -> bytes:
    return msgpack.packb([1795769385.38, events, dp_rank])


def test_stored_event_gets_our_tokens_hash_per_block() -> None:
    data = convert_event(stored_map(parent_block_hash=7))
    expected = block_hashes(TOKENS, 32)
    assert data == KvStored(7, (StoredBlock(11, expected[0]), StoredBlock(22, expected[1])))


def test_array_encoded_events_of_older_publishers() -> None:
    stored = ["BlockStored", [11, 22], None, TOKENS, 32, None, "GPU", None]
    removed = ["BlockRemoved", [11], "GPU"]
    assert convert_event(stored) == convert_event(stored_map())
    assert convert_event(removed) == KvRemoved((11,))
    assert convert_event(["AllBlocksCleared"]) == KvCleared()


def test_removed_and_cleared() -> None:
    assert convert_event({"type": "BlockRemoved", "block_hashes": [5, -1], "medium": "GPU"}) == (
        KvRemoved((5, 2**64 - 1))
    )
    assert convert_event({"type": "AllBlocksCleared"}) == KvCleared()


def test_offloaded_tiers_and_other_groups_are_ignored() -> None:
    assert convert_event(stored_map(medium="CPU")) is None
    assert convert_event({"type": "BlockRemoved", "block_hashes": [5], "medium": "CPU"}) is None
    assert convert_event(stored_map(group_idx=1)) is None
    assert convert_event({"type": "SomethingNew"}) is None


def test_lora_blocks_hash_with_the_adapter_salt() -> None:
    data = convert_event(stored_map(lora_name="my-adapter"))
    assert isinstance(data, KvStored)
    seed = salted_seed("my-adapter")
    assert [b.tokens_hash for b in data.blocks] == block_hashes(TOKENS, 32, seed=seed)


def test_partial_token_list_keeps_only_hashable_blocks() -> None:
    data = convert_event(stored_map(token_ids=TOKENS[:40]))
    assert isinstance(data, KvStored)
    assert data.blocks == (StoredBlock(11, block_hashes(TOKENS, 32)[0]),)


def test_external_hash_forms() -> None:
    assert external_hash(42) == 42
    assert external_hash(-2) == 2**64 - 2
    assert external_hash(b"\x01" + b"\x00" * 8) == 0  # big-endian, low 64 bits
    assert external_hash(bytes(range(32))) == int.from_bytes(bytes(range(24, 32)), "big")
    with pytest.raises(KvEventFormatError):
        external_hash("nope")
    with pytest.raises(KvEventFormatError):
        external_hash(True)


def test_bad_payloads_raise_format_errors() -> None:
    with pytest.raises(KvEventFormatError, match="undecodable"):
        decode_batch(b"\xc1")
    with pytest.raises(KvEventFormatError, match="is not"):
        decode_batch(msgpack.packb(5))
    with pytest.raises(KvEventFormatError, match="no type tag"):
        convert_event({"block_hashes": []})
    with pytest.raises(KvEventFormatError, match="block_size"):
        convert_event(stored_map(block_size=0))


def test_converter_numbers_emitted_events_per_rank() -> None:
    conv = KvEventConverter()
    first = conv.convert(
        batch([stored_map(), stored_map(medium="CPU"), {"type": "AllBlocksCleared"}])
    )
    other_rank = conv.convert(batch([{"type": "AllBlocksCleared"}], dp_rank=1))
    second = conv.convert(batch([{"type": "BlockRemoved", "block_hashes": [11], "medium": "GPU"}]))
    assert [(e.event_id, e.dp_rank) for e in first] == [(0, 0), (1, 0)]
    assert [(e.event_id, e.dp_rank) for e in other_rank] == [(0, 1)]
    assert second == [KvCacheEvent(2, KvRemoved((11,)), 0)]


def test_subscriber_addresses_follow_vllms_bind_rule() -> None:
    assert publisher_binds("tcp://*:5557") and publisher_binds("ipc:///tmp/x")
    assert not publisher_binds("tcp://127.0.0.1:5557")
    assert subscriber_address("tcp://*:5557") == "tcp://127.0.0.1:5557"
    assert subscriber_address("tcp://*:5557", 2) == "tcp://127.0.0.1:5559"
    assert subscriber_address("tcp://10.0.0.5:7000", 1) == "tcp://10.0.0.5:7001"
    assert subscriber_address("ipc:///tmp/kv", 1) == "ipc:///tmp/kv_dp1"
    with pytest.raises(ValueError, match="has no port"):
        subscriber_address("tcp://host")


@pytest.mark.parametrize("subscriber_binds", [True, False])
async def test_subscriber_receives_a_publishers_batches(subscriber_binds: bool) -> None:
    """A real ZMQ PUB socket sending vLLM's multipart frames, either side binding."""
    port = free_tcp_port()
    address = f"tcp://127.0.0.1:{port}"
    sink = RecordingEngineSink()
    sub = ZmqKvEventSubscriber([address], sink, topic="kv", bind=subscriber_binds)
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        if subscriber_binds:
            sub.start()
            pub.connect(address)
        else:
            pub.bind(address)
            sub.start()
        payload = batch([stored_map()])
        for seq in range(200):  # PUB drops messages until the subscription propagates
            await pub.send_multipart([b"kv", seq.to_bytes(8, "big"), payload])
            try:
                await asyncio.wait_for(sink.arrived.wait(), 0.05)
                break
            except TimeoutError:
                continue
        await pub.send_multipart([b"other-topic", b"\0" * 8, payload])
        await pub.send_multipart([b"kv", b"\0" * 8, b"\xc1"])  # bad batch: logged, skipped
        await pub.send_multipart([b"kv", b"\0" * 8, batch([{"type": "AllBlocksCleared"}])])
        while not any(isinstance(e.data, KvCleared) for e in sink.kv_events):
            sink.arrived.clear()
            await asyncio.wait_for(sink.arrived.wait(), 5)
    finally:
        await sub.stop()
        pub.close(linger=0)
        ctx.term()
    assert isinstance(sink.kv_events[0].data, KvStored)
    assert isinstance(sink.kv_events[-1].data, KvCleared)
    assert [e.event_id for e in sink.kv_events] == list(range(len(sink.kv_events)))
    assert sub.received == len(sink.kv_events)
