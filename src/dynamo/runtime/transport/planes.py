"""Choosing the request plane: the server a process serves on, and a client for any instance.

An instance's discovery entry names its plane: `"transport": {"tcp": "host:port"}` or
`{"nats": "<subject>"}`. `address_of` turns that into one address string (`tcp://host:port`
or `nats:<subject>`), and `AnyPlaneClient` sends each stream over the plane its address
names, so a caller reaches workers of both planes whatever its own `--request-plane` is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.transport.base import RequestHandler, RequestPlaneServer
from dynamo.runtime.transport.nats_wire import ADDRESS_SCHEME, address_for
from dynamo.runtime.transport.peer_watch import PeerWatch
from dynamo.runtime.transport.tcp import TcpRequestClient, TcpRequestServer

if TYPE_CHECKING:
    from dynamo.runtime.transport.nats_request_client import NatsRequestClient

PLANES = ("tcp", "nats")


def make_request_server(config: RuntimeConfig) -> RequestPlaneServer:
    """The (not yet started) server of `config.request_plane`."""
    if config.request_plane == "tcp":
        return TcpRequestServer(config.tcp_host, config.tcp_port)
    if config.request_plane == "nats":
        from dynamo.runtime.transport.nats_request import NatsRequestServer

        return NatsRequestServer(config.nats_server)
    raise ConfigError(f"unknown request plane {config.request_plane!r}: expected tcp or nats")


async def serve(server: RequestPlaneServer, name: str, handler: RequestHandler) -> dict[str, str]:
    """Serve `handler` as `name`; return the instance's `transport` entry once reachable."""
    server.register(name, handler)
    if isinstance(server, TcpRequestServer):
        return {"tcp": server.address.removeprefix("tcp://")}
    from dynamo.runtime.transport.nats_request import NatsRequestServer

    if isinstance(server, NatsRequestServer):
        await server.ready()  # subscribed: a caller finding the entry finds a responder
        return {"nats": server.subject(name)}
    raise ConfigError(f"no transport entry for request-plane server {type(server).__name__}")


def address_of(transport: Any, preferred: str = "tcp") -> str | None:
    """The address in an instance's `transport` entry (the `preferred` plane first)."""
    if not isinstance(transport, dict):
        return None
    for plane in (preferred, *PLANES):
        target = transport.get(plane)
        if isinstance(target, str) and target:
            return f"tcp://{target}" if plane == "tcp" else address_for(target)
    return None


class AnyPlaneClient:
    """`RequestPlaneClient` for `tcp://…` (or bare `host:port`) and `nats:…` addresses.

    The NATS client connects to `nats_server` on the first `nats:` stream. With
    `peer_keepalive_s` > 0, `peers` watches the TCP addresses callers route to; a peer lost
    (not one that said it is stopping) has its pooled connections closed, so its open
    streams fail (and migrate) at once.
    """

    def __init__(
        self, nats_server: str, *, peer_keepalive_s: int = 0, peer_reconnect_max_s: float = 5.0
    ) -> None:
        self._nats_server = nats_server
        self.tcp = TcpRequestClient()
        self._nats: NatsRequestClient | None = None
        self.peers: PeerWatch | None = None
        if peer_keepalive_s > 0:
            self.peers = PeerWatch(
                keepalive_s=peer_keepalive_s,
                reconnect_max_s=peer_reconnect_max_s,
                on_lost=self._peer_lost,
            )

    def _peer_lost(self, address: str) -> None:
        self.tcp.drop(address, f"request-plane peer {address} is down")

    @property
    def nats(self) -> NatsRequestClient:
        if self._nats is None:
            from dynamo.runtime.transport.nats_request_client import NatsRequestClient

            self._nats = NatsRequestClient(self._nats_server)
        return self._nats

    def stream(
        self, address: str, name: str, request: dict[str, Any], *, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        if address.startswith(ADDRESS_SCHEME):
            return self.nats.stream(address, name, request, request_id=request_id)
        return self.tcp.stream(address, name, request, request_id=request_id)

    def describe(self) -> list[str]:
        """The TCP connections this client holds, a line each (`TcpRequestClient.describe`)."""
        return [f"request plane {line}" for line in self.tcp.describe()]

    async def close(self) -> None:
        if self.peers is not None:
            await self.peers.close()
        await self.tcp.close()
        if self._nats is not None:
            await self._nats.close()
