"""The local scaling hook: change a service's replicas while `dynamo serve` runs.

`LocalConnector` talks to the runner in-process (given the runner) or through the control
socket in its run dir (given a path, or `DYN_SERVE_CONTROL`, which every child inherits, so a
planner running inside the graph can scale its workers). Wire format: one JSON object per line.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from dynamo.deploy.state import CONTROL_ENV, CONTROL_SOCKET
from dynamo.runtime.errors import ConfigError, TransportError

MAX_MESSAGE_BYTES = 1 << 20


class ReplicaController(Protocol):
    """What the runner offers to connectors."""

    async def set_replicas(self, service: str, replicas: int) -> None:
        """Scale `service` to `replicas` (raises ConfigError for an unknown service)."""

    def replica_counts(self) -> dict[str, int]:
        """Desired replicas per service."""

    def status(self) -> dict[str, Any]:
        """The run state as JSON-able data."""


class LocalConnector:
    """Scale services of a local graph; the planner's connector for `dynamo serve`."""

    def __init__(self, target: ReplicaController | str | Path) -> None:
        self._controller: ReplicaController | None = None
        self._socket: Path | None = None
        if isinstance(target, str | Path):
            path = Path(target)
            self._socket = path / CONTROL_SOCKET if path.is_dir() else path
        else:
            self._controller = target

    @classmethod
    def from_env(cls) -> LocalConnector:
        """The connector of the `dynamo serve` that started this process."""
        path = os.environ.get(CONTROL_ENV)
        if not path:
            raise ConfigError(f"{CONTROL_ENV} is not set: not running under `dynamo serve`")
        return cls(path)

    async def set_replicas(self, service: str, replicas: int) -> None:
        if replicas < 0:
            raise ConfigError(f"replicas must be >= 0, got {replicas}")
        if self._controller is not None:
            await self._controller.set_replicas(service, replicas)
            return
        await self._call({"op": "scale", "service": service, "replicas": replicas})

    async def set_component_replicas(self, targets: Mapping[str, int]) -> None:
        """Scale several services (Dynamo's planner connector call)."""
        for service, replicas in targets.items():
            await self.set_replicas(service, replicas)

    async def add_component(self, service: str) -> None:
        """One more replica of `service`."""
        await self.set_replicas(service, await self.get_replicas(service) + 1)

    async def remove_component(self, service: str) -> None:
        """One replica fewer of `service` (never below 0)."""
        current = await self.get_replicas(service)
        if current > 0:
            await self.set_replicas(service, current - 1)

    async def replica_counts(self) -> dict[str, int]:
        if self._controller is not None:
            return self._controller.replica_counts()
        reply = await self._call({"op": "replicas"})
        return {str(k): int(v) for k, v in reply["replicas"].items()}

    async def get_replicas(self, service: str) -> int:
        counts = await self.replica_counts()
        if service not in counts:
            raise ConfigError(f"no service {service!r}; services: {', '.join(counts)}")
        return counts[service]

    async def status(self) -> dict[str, Any]:
        if self._controller is not None:
            return self._controller.status()
        reply = await self._call({"op": "status"})
        status: dict[str, Any] = reply["status"]
        return status

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._socket is None:
            raise ConfigError("connector has no control socket")
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(self._socket), limit=MAX_MESSAGE_BYTES
            )
        except OSError as exc:
            raise TransportError(
                f"cannot reach dynamo serve at {self._socket}: {exc.strerror or exc}"
            ) from exc
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        if not line:
            raise TransportError(f"dynamo serve at {self._socket} closed the connection")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise ConfigError(str(reply.get("error", "request failed")))
        return reply


async def _handle(
    controller: ReplicaController, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        line = await reader.readline()
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "scale":
                replicas = request.get("replicas")
                if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                    raise ConfigError(f"replicas must be an integer >= 0, got {replicas!r}")
                await controller.set_replicas(str(request.get("service")), replicas)
                reply: dict[str, Any] = {"ok": True, "replicas": controller.replica_counts()}
            elif op == "replicas":
                reply = {"ok": True, "replicas": controller.replica_counts()}
            elif op == "status":
                reply = {"ok": True, "status": controller.status()}
            else:
                raise ConfigError(f"unknown op {op!r}")
        except (ConfigError, ValueError, AttributeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    finally:
        writer.close()


def _remove_stale(path: Path) -> None:
    path.unlink(missing_ok=True)


async def start_control_server(path: Path, controller: ReplicaController) -> asyncio.Server:
    """Listen on the unix socket `path` for connector requests."""
    _remove_stale(path)
    try:
        return await asyncio.start_unix_server(
            lambda r, w: _handle(controller, r, w), path=str(path), limit=MAX_MESSAGE_BYTES
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {path}: {exc.strerror or exc} (a shorter --run-dir may help)"
        ) from exc
