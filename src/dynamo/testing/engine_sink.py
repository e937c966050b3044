"""`RecordingEngineSink`: an `EngineEventSink` that keeps what an engine reported, for tests."""

from __future__ import annotations

import asyncio

from dynamo.protocols.kv_events import KvCacheEvent


class RecordingEngineSink:
    """Records KV events in order and counts load-change notifications.

    `arrived` is set on every KV event (a test clears it to wait for the next one).
    """

    def __init__(self) -> None:
        self.kv_events: list[KvCacheEvent] = []
        self.load_changes = 0
        self.arrived = asyncio.Event()

    def kv_event(self, event: KvCacheEvent) -> None:
        self.kv_events.append(event)
        self.arrived.set()

    def load_changed(self) -> None:
        self.load_changes += 1
