"""Liveness of request-plane peers: one idle TCP connection per watched `tcp://` address.

A caller watches the address of every instance it routes to. While the watch connection is
open the peer counts as up; when it breaks (EOF or reset: the process died, on any machine;
or the kernel's keepalive gave up: the host or the network is gone) the peer is down and
lost at once, and a probe reconnects with capped exponential backoff and jitter until it gets
through (up again) or the caller stops watching (discovery deleted the instance). A server
that stops on purpose sends GOAWAY first: the peer is down (it refuses new requests while it
drains) but not lost, and the caller's open streams to it go on.

Keepalive is the kernel's (SO_KEEPALIVE), not a ping in the event loop: probes are answered
by the peer's kernel, so neither side's busy event loop can pass for a dead peer, and the
worker runs no code beyond accepting the connection. A peer that is alive but hung (a
stopped process) still answers them; discovery's lease is the backstop for that.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable

from dynamo.runtime.transport.framing import GOAWAY
from dynamo.runtime.transport.tcp import parse_address

log = logging.getLogger(__name__)

KEEPALIVE_PROBES = 2  # unanswered probes before the kernel drops a silent connection
_FIRST_RETRY_S = 0.1
_GOAWAY_FRAME = b"\x00\x00\x00\x02\x91" + bytes([GOAWAY])  # length 2, msgpack [5]

PeerCallback = Callable[[str, bool], None]


def reconnect_delay(attempt: int, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect `attempt` (0, 1, …): doubling from 0.1 s up to `cap_s`,
    each scaled by a random factor in [0.5, 1) so that many callers do not probe in step."""
    base = min(cap_s, _FIRST_RETRY_S * (2 ** min(attempt, 30)))
    return base * (0.5 + rand() / 2)


def silent_peer_bound_s(keepalive_s: int) -> int:
    """Worst case from a peer going silent to the kernel dropping its connection."""
    return keepalive_s * (1 + KEEPALIVE_PROBES)


def set_keepalive(sock: socket.socket | object, keepalive_s: int) -> None:
    """Kernel keepalive: first probe after `keepalive_s` idle, then every `keepalive_s`."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is None:
        return
    setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for option, value in (
        (idle, keepalive_s),
        (getattr(socket, "TCP_KEEPINTVL", None), keepalive_s),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
    ):
        if option is not None:
            setsockopt(socket.IPPROTO_TCP, option, value)


class _WatchConnection(asyncio.Protocol):
    """Opens no stream, so the server sends nothing but GOAWAY; `ended` resolves to
    `(reason, graceful)` on GOAWAY or when the connection ends, whichever comes first."""

    def __init__(self, keepalive_s: int) -> None:
        self._keepalive_s = keepalive_s
        self._buf = b""
        self.transport: asyncio.BaseTransport | None = None
        self.ended: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        set_keepalive(transport.get_extra_info("socket"), self._keepalive_s)

    def data_received(self, data: bytes) -> None:
        self._buf = (self._buf + data)[-len(_GOAWAY_FRAME) :]
        if self._buf == _GOAWAY_FRAME and not self.ended.done():
            self.ended.set_result(("the server is stopping", True))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            reason = f"connection lost ({exc})" if exc else "connection closed"
            self.ended.set_result((reason, False))


class PeerWatch:
    """Up/down state of watched `tcp://host:port` addresses (other addresses: always up).

    `watch`/`unwatch` are reference counted; `subscribe` hears `(address, up)` on every
    change; `on_lost(address)` hears only failures (not a GOAWAY). An address is up until its
    first connection attempt fails or its connection breaks, so a freshly discovered instance
    routes at once, as without watching.
    """

    def __init__(
        self,
        *,
        keepalive_s: int = 1,
        reconnect_max_s: float = 5.0,
        connect_timeout_s: float = 3.0,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._keepalive_s = max(1, int(keepalive_s))
        self._reconnect_max_s = max(_FIRST_RETRY_S, reconnect_max_s)
        self._connect_timeout_s = connect_timeout_s
        self._refs: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()
        self._lost: set[str] = set()  # down by a failure, not by a GOAWAY
        self._callbacks: list[PeerCallback] = []
        self._on_lost = on_lost
        self.lost_total = 0  # failures of any address

    def watch(self, address: str) -> None:
        if not address.startswith("tcp://"):
            return
        self._refs[address] = self._refs.get(address, 0) + 1
        if address not in self._tasks:
            self._tasks[address] = asyncio.create_task(
                self._follow(address), name=f"peer-watch {address}"
            )

    def unwatch(self, address: str) -> None:
        refs = self._refs.get(address)
        if refs is None:
            return
        if refs > 1:
            self._refs[address] = refs - 1
            return
        del self._refs[address]
        self._down.discard(address)
        self._lost.discard(address)
        task = self._tasks.pop(address, None)
        if task is not None:
            task.cancel()

    def is_up(self, address: str) -> bool:
        return address not in self._down

    def is_lost(self, address: str) -> bool:
        """Down because the connection failed (not because the peer said it is stopping)."""
        return address in self._lost

    def watched(self) -> list[str]:
        return sorted(self._refs)

    def subscribe(self, callback: PeerCallback) -> Callable[[], None]:
        """Hear `(address, up)` on every change; returns the unsubscribe function."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._refs.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, address: str) -> None:
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        attempt = 0
        keepalive_s = self._keepalive_s
        me = asyncio.current_task()
        while True:
            try:
                # not wait_for: on 3.11 it can swallow the cancellation of an unwatch that
                # lands as the connect fails, and this task would report a peer nobody watches
                async with asyncio.timeout(self._connect_timeout_s):
                    _, conn = await loop.create_connection(
                        lambda: _WatchConnection(keepalive_s), host, port
                    )
            except (OSError, TimeoutError) as exc:
                if self._tasks.get(address) is not me:  # unwatched meanwhile: not ours to say
                    return
                self._set(address, False, f"cannot connect: {exc or 'timeout'}", lost=True)
                await asyncio.sleep(reconnect_delay(attempt, self._reconnect_max_s))
                attempt += 1
                continue
            attempt = 0
            self._set(address, True, "reconnected")
            try:
                reason, graceful = await conn.ended
            finally:
                if conn.transport is not None:
                    conn.transport.close()
            self._set(address, False, reason, lost=not graceful)
            await asyncio.sleep(reconnect_delay(0, self._reconnect_max_s))
            attempt = 1

    def _set(self, address: str, up: bool, reason: str, *, lost: bool = False) -> None:
        if up == (address not in self._down):
            return
        if up:
            self._down.discard(address)
            self._lost.discard(address)
            log.info("request plane: %s reachable again (%s)", address, reason)
        else:
            self._down.add(address)
            if lost:
                self._lost.add(address)
                self.lost_total += 1
                log.warning("request plane: %s down (%s)", address, reason)
                if self._on_lost is not None:
                    self._on_lost(address)
            else:
                log.info("request plane: %s down (%s)", address, reason)
        for callback in list(self._callbacks):
            try:
                callback(address, up)
            except Exception:
                log.exception("peer-watch callback failed for %s", address)
