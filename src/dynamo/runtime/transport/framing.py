"""Wire format of the TCP request plane and the framed asyncio protocol both ends share.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. Each frame is
one message, a msgpack array whose first element is its type:

  client → server  REQUEST [0, sid, name, request_id, body]    CANCEL [1, sid]
  server → client  DATA    [2, sid, body]                      ERROR  [3, sid, kind, message]
                   FINAL   [4, sid]                            GOAWAY [5]

GOAWAY tells a connection with no open stream that the server is stopping (a caller watching
the peer takes it out of routing, as a deliberate stop and not as a failure).

`sid` (stream id) is chosen by the client and unique per connection, so many streams share
one connection. Every stream ends with exactly one FINAL or ERROR; a stream whose connection
breaks before that is incomplete (`StreamIncompleteError`). Writes are coalesced: frames
queued during one event-loop turn leave in a single `transport.write`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, cast

import msgpack

from dynamo.runtime.errors import (
    CancelledError,
    DynamoError,
    EngineShutdownError,
    InvalidRequestError,
    KvTransferError,
    NotFoundError,
    OverloadedError,
    PromptTooLongError,
    RemoteError,
    StreamIncompleteError,
    TransportError,
    UnavailableError,
)
from dynamo.runtime.transport.packing import pack_message

log = logging.getLogger(__name__)

REQUEST, CANCEL, DATA, ERROR, FINAL, GOAWAY = 0, 1, 2, 3, 4, 5
MAX_FRAME_BYTES = 32 * 1024 * 1024
_FLUSH_BYTES = 256 * 1024
_HEADER = struct.Struct(">I")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack

# Order matters: subclasses before their bases.
_ERROR_KINDS: tuple[tuple[str, type[DynamoError]], ...] = (
    ("stream_incomplete", StreamIncompleteError),
    ("engine_shutdown", EngineShutdownError),
    ("overloaded", OverloadedError),
    ("unavailable", UnavailableError),
    ("prompt_too_long", PromptTooLongError),
    ("kv_transfer", KvTransferError),
    ("invalid_request", InvalidRequestError),
    ("not_found", NotFoundError),
    ("cancelled", CancelledError),
)
_KIND_TO_ERROR = dict(_ERROR_KINDS)


def error_to_wire(exc: BaseException) -> tuple[str, str]:
    """(kind, message) of a handler's exception, as sent in an ERROR frame."""
    if isinstance(exc, RemoteError):
        return exc.kind, str(exc)
    if isinstance(exc, TransportError) and not isinstance(exc, StreamIncompleteError):
        return "unavailable", str(exc)
    for kind, cls in _ERROR_KINDS:
        if isinstance(exc, cls):
            return kind, str(exc)
    return "internal", f"{type(exc).__name__}: {exc}"


def error_from_wire(kind: str, message: str) -> DynamoError:
    """The exception a caller raises for an ERROR frame."""
    cls = _KIND_TO_ERROR.get(kind)
    if cls is not None:
        return cls(message)
    return RemoteError(message, kind=kind)


class ProtocolViolation(Exception):
    """A peer sent something that is not a valid frame or message."""


class FramedProtocol(asyncio.Protocol):
    """Length-prefixed msgpack frames over one TCP connection, with flow control both ways."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.closed = False
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.loop = asyncio.get_running_loop()
        self._pack = msgpack.Packer(use_bin_type=True).pack

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=1 << 20)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def data_received(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        pos, end, limit = 0, len(buf), self.max_frame_bytes
        try:
            with memoryview(buf) as view:
                while end - pos >= 4:
                    (size,) = _unpack_header(buf, pos)
                    if size > limit:
                        raise ProtocolViolation(f"frame of {size} bytes exceeds max {limit}")
                    stop = pos + 4 + size
                    if stop > end:
                        break
                    try:
                        msg = msgpack.unpackb(view[pos + 4 : stop], raw=False)
                    except Exception as exc:
                        raise ProtocolViolation(f"undecodable msgpack: {exc}") from exc
                    pos = stop
                    if type(msg) is not list or not msg:
                        raise ProtocolViolation(f"message is not a non-empty array: {msg!r:.80}")
                    self.on_message(msg)
                    if self.closed:
                        return
        except ProtocolViolation as exc:
            self.protocol_error(str(exc))
            return
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < end:
            self._buf += data[pos:]

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._out.clear()
        self._wake_drainers()

    # -- for subclasses -----------------------------------------------------------------
    def on_message(self, msg: list[Any]) -> None:
        raise NotImplementedError

    def protocol_error(self, reason: str) -> None:
        """The peer broke the protocol: log it and drop this connection only."""
        log.error(
            "request plane: malformed frame from %s (%s); closing connection", self.peer, reason
        )
        self.close()

    def send(self, msg: list[Any]) -> None:
        """Queue one message; raises TransportError if it is too large or unencodable."""
        try:
            body = self._pack(msg)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TransportError(f"message not encodable as msgpack: {exc}") from exc
        self.send_packed(body)

    def send_request(self, sid: int, name: str, request_id: str, request: Any) -> None:
        """Queue a REQUEST, its prompt packed once for both legs of a disaggregated request
        (`packing.pack_message`); raises TransportError like `send`."""
        try:
            body = pack_message(self._pack, [REQUEST, sid, name, request_id, request], 4)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TransportError(f"message not encodable as msgpack: {exc}") from exc
        self.send_packed(body)

    def send_packed(self, body: bytes) -> None:
        """Queue one message already packed as msgpack."""
        if len(body) > self.max_frame_bytes:
            raise TransportError(
                f"frame of {len(body)} bytes exceeds the max frame size {self.max_frame_bytes}"
            )
        if self.closed:
            return
        out = self._out
        out.append(_pack_header(len(body)))
        out.append(body)
        self._out_bytes += len(body)
        if self._out_bytes >= _FLUSH_BYTES:
            self._flush()  # a big burst: hand it to the transport now so flow control sees it
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._write_paused and not self.closed:
            fut = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()
        self.closed = True

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._out_bytes = 0
        if self._out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
