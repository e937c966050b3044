"""`RecordingEngineSink`: an `EngineEventSink` that keeps what an engine reported, for tests."""

from __future__ import annotations

from dynamo.protocols.kv_events import KvCacheEvent


class RecordingEngineSink:
    """Records KV events in order and counts load-change notifications."""

    def __init__(self) -> None:
        self.kv_events: list[KvCacheEvent] = []
        self.load_changes = 0

    def kv_event(self, event: KvCacheEvent) -> None:
        self.kv_events.append(event)

    def load_changed(self) -> None:
        self.load_changes += 1
