"""The `local` connector: scale the services of the `dynamo serve` graph the planner runs in.

It talks to the runner through `LocalConnector` (the control socket in `DYN_SERVE_CONTROL`).
A role's service is picked by `connectors.services.pick_service` (the same rules as on
Kubernetes: an explicit name, else `subComponentType`, else the worker named like the role)
from the runner's status entries, adapted to the `spec.services` shape. Live replicas are
the replicas the runner keeps now (starting or running), read fresh on every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo.deploy.connector import LocalConnector
from dynamo.planner.connectors.base import ConnectorSettings, Role
from dynamo.planner.connectors.services import pick_services
from dynamo.runtime.errors import ConfigError

GRAPH = "the dynamo serve graph"


def as_services(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The runner's status entries in `spec.services` shape, for `pick_service`."""
    services: dict[str, dict[str, Any]] = {}
    for entry in entries:
        spec: dict[str, Any] = {}
        if entry.get("component_type"):
            spec["componentType"] = entry["component_type"]
        if entry.get("sub_component_type"):
            spec["subComponentType"] = entry["sub_component_type"]
        services[str(entry["name"])] = spec
    return services


class LocalScaling:
    """`ScalingConnector` over the `dynamo serve` control socket."""

    def __init__(self, settings: ConnectorSettings, connector: LocalConnector | None = None):
        self._settings = settings
        self._connector = connector or LocalConnector.from_env()

    async def _services(self) -> dict[Role, tuple[str, int]]:
        status = await self._connector.status()
        entries: list[dict[str, Any]] = list(status.get("services", []))
        chosen = pick_services(as_services(entries), self._settings, graph=GRAPH)
        replicas = {str(e["name"]): len(e.get("replicas", [])) for e in entries}
        return {role: (name, replicas[name]) for role, name in chosen.items()}

    async def live_replicas(self) -> dict[Role, int]:
        return {role: count for role, (_, count) in (await self._services()).items()}

    async def scale(self, targets: Mapping[Role, int], reason: str) -> None:
        services = await self._services()
        for role, replicas in targets.items():
            if role not in services:
                raise ConfigError(f"this planner does not scale {role}")
            name, live = services[role]
            if replicas != live:
                await self._connector.set_replicas(name, replicas)

    async def close(self) -> None:
        return None
