"""Event planes (ZMQ, NATS): delivery by topic prefix with a monotonic per-publisher seq."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dynamo.runtime.transport.events import SequenceStamper, event_topic
from dynamo.runtime.transport.nats_events import (
    NatsEventPublisher,
    NatsEventSubscriber,
    subject_for_prefix,
)
from dynamo.runtime.transport.zmq_events import ZmqEventPublisher, ZmqEventSubscriber
from dynamo.testing.servers import NatsServer


def test_topic_and_subject_helpers() -> None:
    assert event_topic("ns", "backend", "kv_events") == "ns.backend.kv_events"
    assert subject_for_prefix("ns.backend.kv") == "ns.backend.>"
    assert subject_for_prefix("ns.backend.") == "ns.backend.>"
    assert subject_for_prefix("ns") == ">"
    assert subject_for_prefix("") == ">"


def test_stamper_does_not_modify_the_payload() -> None:
    payload = {"a": 1}
    stamper = SequenceStamper()
    assert stamper.encode(payload) != stamper.encode(payload)  # seq 1, then 2
    assert payload == {"a": 1}


async def receive_run(
    publish: Any, messages: AsyncIterator[tuple[str, dict[str, Any]]], count: int
) -> list[tuple[str, dict[str, Any]]]:
    """Publish until the subscription is live (pub/sub drops before that), then `count` more."""
    got: list[tuple[str, dict[str, Any]]] = []

    async def pump() -> None:
        async for item in messages:
            got.append(item)
            if len(got) > count:
                return

    reader = asyncio.create_task(pump())
    while not got:
        await publish("ns.worker.kv_events", {"warmup": True})
        await asyncio.sleep(0.02)
    for i in range(count):
        await publish("ns.worker.kv_events" if i % 2 else "ns.worker.load", {"i": i})
        await publish("other.worker.kv_events", {"ignored": i})
    await asyncio.wait_for(reader, 20)
    return got


def assert_delivered_in_order(got: list[tuple[str, dict[str, Any]]], count: int) -> None:
    seqs = [payload["seq"] for _, payload in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    tail = [p for _, p in got if "i" in p]
    assert [p["i"] for p in tail] == list(range(len(tail)))
    assert all(topic.startswith("ns.worker.") for topic, _ in got)
    assert len(got) == count + 1


async def test_zmq_delivers_by_prefix_with_monotonic_seq() -> None:
    pub = ZmqEventPublisher()
    address = await pub.start()
    sub = ZmqEventSubscriber()
    sub.subscribe("ns.worker.")
    await sub.connect(address)
    got = await receive_run(pub.publish, aiter(sub), 50)
    assert_delivered_in_order(got, 50)
    await sub.disconnect(address)
    assert sub.publishers == set()
    await sub.close()
    await pub.close()


async def test_nats_delivers_by_prefix_with_monotonic_seq(nats_server: NatsServer) -> None:
    pub = NatsEventPublisher(nats_server.url)
    await pub.start()
    sub = NatsEventSubscriber(nats_server.url)
    await sub.start()
    sub.subscribe("ns.worker.")
    await sub.ready()
    got = await receive_run(pub.publish, aiter(sub), 50)
    assert_delivered_in_order(got, 50)
    await sub.close()
    await pub.close()


async def test_nats_unreachable_is_a_transport_error() -> None:
    from dynamo.runtime.errors import TransportError
    from dynamo.testing.servers import free_port

    pub = NatsEventPublisher(f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(TransportError, match="cannot connect to NATS"):
        await pub.start()
