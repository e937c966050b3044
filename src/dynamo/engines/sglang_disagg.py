"""SGLang's side of disaggregated serving: bootstrap addresses and rooms (pure functions).

SGLang hands the KV over while both legs run. A prefill engine (`--disaggregation-mode
prefill`) runs a bootstrap server on `--disaggregation-bootstrap-port`; its worker registers
that address in its model card. For each request the frontend picks a prefill worker, makes up
a `bootstrap_room` and sends both legs at once: the prefill leg with the room, the decode leg
with the prefill worker's `bootstrap_host`/`bootstrap_port` and the same room. Both engines get
the three as `Engine.async_generate(..., bootstrap_host=, bootstrap_port=, bootstrap_room=)`;
the decode engine reserves KV pages and the prefill engine writes the prompt's KV into them
(NIXL or Mooncake, `--disaggregation-transfer-backend`).
"""

from __future__ import annotations

import socket
from typing import Any

from dynamo.protocols.engine import EngineRequest
from dynamo.protocols.model_card import BootstrapAddress, WorkerRole
from dynamo.runtime.errors import KvTransferError, UnavailableError

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def bootstrap_address(server_args: Any, local_host: str | None = None) -> BootstrapAddress:
    """Where decode engines reach this prefill engine's bootstrap server.

    The host of `--dist-init-addr` when set (multi-node), else `--host` when it names one
    address, else this machine's address.
    """
    port = int(server_args.disaggregation_bootstrap_port)
    dist = getattr(server_args, "dist_init_addr", None)
    if dist:
        return BootstrapAddress(host=_host_of(str(dist)), port=port)
    host = str(getattr(server_args, "host", "") or "")
    if host in WILDCARD_HOSTS:
        host = local_host or socket.gethostbyname(socket.gethostname())
    return BootstrapAddress(host=host, port=port)


def _host_of(addr: str) -> str:
    """`host` of "host:port", "[v6]:port", "[v6]" or a bare host."""
    addr = addr.strip()
    if addr.startswith("["):
        return addr[1 : addr.find("]")] if "]" in addr else addr.strip("[]")
    if addr.count(":") == 1:
        return addr.rsplit(":", 1)[0]
    return addr


def bootstrap_kwargs(
    request: EngineRequest, role: WorkerRole, own: BootstrapAddress | None
) -> dict[str, Any]:
    """The `bootstrap_host/port/room` keyword arguments of `async_generate` for one leg.

    A prefill engine gets the room from the request and names its own address; a decode
    engine gets all three from the request (it cannot prefill without a prefill worker).
    """
    if role is WorkerRole.AGGREGATED:
        return {}
    params = request.get("disaggregated_params")
    if role is WorkerRole.PREFILL:
        if own is None:
            raise UnavailableError("this SGLang prefill worker has no bootstrap address")
        room = _room(params, "an SGLang prefill leg")
        return {"bootstrap_host": own.host, "bootstrap_port": own.port, "bootstrap_room": room}
    if params is None:
        raise UnavailableError(
            "an SGLang decode worker serves only disaggregated requests: it needs a prefill "
            "worker's bootstrap_host/bootstrap_port/bootstrap_room (no prefill worker is up?)"
        )
    room = _room(params, "an SGLang decode leg")
    host, port = params.get("bootstrap_host"), params.get("bootstrap_port")
    if not isinstance(host, str) or not host:
        raise KvTransferError(f"bootstrap_host must be a non-empty string, got {host!r}")
    if type(port) is not int or not 0 < port < 65536:
        raise KvTransferError(f"bootstrap_port must be a port number, got {port!r}")
    return {"bootstrap_host": host, "bootstrap_port": port, "bootstrap_room": room}


def _room(params: object, leg: str) -> int:
    if not isinstance(params, dict):
        raise KvTransferError(f"{leg} needs disaggregated_params with a bootstrap_room")
    room = params.get("bootstrap_room")
    if type(room) is not int or not 0 <= room < 2**63:
        raise KvTransferError(f"bootstrap_room must be an integer in [0, 2**63), got {room!r}")
    return room
