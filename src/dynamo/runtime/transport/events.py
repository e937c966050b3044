"""Helpers every event plane shares: per-publisher sequence numbers and payload codec.

Each published payload carries `"seq"`, a counter that starts at 1 and grows by one per
message of that publisher, so a subscriber can detect gaps (pub/sub may drop under load).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import msgpack

log = logging.getLogger(__name__)


class SequenceStamper:
    """Adds a monotonic `seq` to every payload one publisher sends."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def encode(self, payload: dict[str, Any]) -> bytes:
        """msgpack of `payload` plus its `seq` (the caller's dict is not modified)."""
        stamped = dict(payload)
        stamped["seq"] = next(self._next)
        return bytes(msgpack.packb(stamped, use_bin_type=True))


def decode_payload(data: bytes, topic: str) -> dict[str, Any] | None:
    """The payload dict, or None (logged) if the bytes are not a msgpack map."""
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        log.warning("event plane: undecodable payload on %r dropped: %s", topic, exc)
        return None
    if not isinstance(value, dict):
        log.warning("event plane: non-map payload on %r dropped", topic)
        return None
    return value


def event_topic(namespace: str, component: str, name: str) -> str:
    """The topic of event `name` (e.g. `kv_events`) published by `namespace.component`."""
    return f"{namespace}.{component}.{name}"
