"""A cap on the client connections the HTTP server holds, below the process's open-file limit.

Without one, idle connections can take every file descriptor, and then the frontend's own
sockets and files (workers, discovery, model files) fail with `EMFILE`. Past the cap a new
connection is answered at once with a 503 OpenAI error and closed, before its request is read.
"""

from __future__ import annotations

import asyncio
import logging
import resource

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

_LINGER_S = 1.0  # how long a refused connection may send before it is closed anyway
# Descriptors kept for the frontend itself when the cap is derived from the open-file limit.
RESERVED_FDS = 1024

_BODY = orjson.dumps(
    {
        "error": {
            "message": "The server holds too many connections; retry later",
            "type": "service_unavailable",
            "param": None,
            "code": "too_many_connections",
        }
    }
)
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%b" % (len(_BODY), _BODY)
)


def connection_limit(configured: int) -> int:
    """`configured`, or for 0 the soft open-file limit less `RESERVED_FDS` (half if smaller)."""
    if configured > 0:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return soft - RESERVED_FDS if soft > 2 * RESERVED_FDS else max(1, soft // 2)


class _Refusal(asyncio.Protocol):
    """A connection over the cap: answered with 503, then closed.

    The request is not read, but the socket is half-closed and kept for at most
    `_LINGER_S` while what the client sends is dropped, so that the client reads the 503
    instead of a reset (closing with unread data would send one).
    """

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.WriteTransport):
            transport.close()
            return
        transport.write(_FULL)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request of a refused connection is dropped

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class CappedServer:
    """A protocol factory over aiohttp's `web.Server` that refuses connections past `limit`."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self._server = server
        self.limit = limit
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._server.connections) >= self.limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "refused %d connections: %d held (--http-max-connections)",
                    self.refused,
                    self.limit,
                )
            return _Refusal()
        return self._server()
