"""Subscribe to an engine's ZMQ KV event publisher and hand converted events to a sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence

import zmq
import zmq.asyncio

from dynamo.engines.base import EngineEventSink
from dynamo.engines.zmq_kv_events import KvEventConverter, KvEventFormatError

log = logging.getLogger(__name__)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the engine binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def publisher_binds(endpoint: str) -> bool:
    """vLLM's rule: its PUB socket binds wildcard and ipc/inproc endpoints, else connects."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def subscriber_address(endpoint: str, rank_offset: int = 0) -> str:
    """The address our SUB socket uses for a publisher configured with `endpoint`.

    A wildcard (`tcp://*:5557`) is reached on loopback. vLLM offsets the port by the
    data-parallel rank (ipc/inproc get a `_dp<rank>` suffix); `rank_offset` does the same.
    """
    if not endpoint.startswith("tcp://"):
        return f"{endpoint}_dp{rank_offset}" if rank_offset else endpoint
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"KV event endpoint {endpoint!r} has no port")
    if host in ("*", "0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::", "[*]"):
        host = "[::1]"
    return f"tcp://{host}:{int(port) + rank_offset}"


class ZmqKvEventSubscriber:
    """Reads `(topic, seq, payload)` messages from one or more publishers until stopped.

    With `bind`, the SUB socket binds `addresses` and the publishers connect to it (vLLM does
    that for a non-wildcard endpoint); binding before the engine starts loses no event.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        sink: EngineEventSink,
        *,
        topic: str = "",
        bind: bool = False,
    ) -> None:
        self._addresses = list(addresses)
        self._bind = bind
        self._sink = sink
        self._topic = topic.encode()
        self._ctx: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._converter = KvEventConverter()
        self.received = 0  # events handed to the sink

    def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        sock = self._socket = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, self._topic)
        sock.setsockopt(zmq.LINGER, 0)
        for address in self._addresses:
            if self._bind:
                sock.bind(address)
            else:
                sock.connect(address)
        self._task = asyncio.create_task(self._run(sock), name="kv-event-subscriber")

    async def _run(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            parts = await sock.recv_multipart()
            if len(parts) < 3:
                log.warning("KV event message with %d parts ignored", len(parts))
                continue
            try:
                events = self._converter.convert(parts[-1])
            except KvEventFormatError as exc:
                log.warning("bad KV event batch ignored: %s", exc)
                continue
            for event in events:
                try:
                    self._sink.kv_event(event)
                except Exception:
                    log.exception("KV event sink failed")
                self.received += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
