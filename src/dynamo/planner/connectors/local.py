"""The `local` connector: scale the services of the `dynamo serve` graph the planner runs in.

It talks to the runner through `LocalConnector` (the control socket in `DYN_SERVE_CONTROL`).
A role's service is the one whose `subComponentType` is the role, else the one named like it
(`prefill` / `decode`, case-insensitive, also `*prefill*` / `*decode*` worker names), unless
`ConnectorSettings.prefill_service` / `decode_service` name it. Live replicas are the replicas
the runner keeps now (starting or running), read fresh on every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo.deploy.connector import LocalConnector
from dynamo.planner.connectors.base import ConnectorSettings, Role
from dynamo.runtime.errors import ConfigError

WORKER_TYPES = ("worker", "prefill", "decode", "main", "")


def find_service(services: list[dict[str, Any]], role: Role, explicit: str | None) -> str:
    """The graph service of `role` among the runner's `services` (status entries)."""
    names = [str(s["name"]) for s in services]
    if explicit is not None:
        if explicit not in names:
            raise ConfigError(f"no service {explicit!r} for {role}; services: {', '.join(names)}")
        return explicit
    by_type = [str(s["name"]) for s in services if s.get("sub_component_type") == role]
    if not by_type:
        by_type = [n for n in names if n.lower() == role]
    if not by_type:
        by_type = [
            str(s["name"])
            for s in services
            if role in str(s["name"]).lower() and s.get("component_type", "") in WORKER_TYPES
        ]
    if len(by_type) != 1:
        found = "none" if not by_type else ", ".join(by_type)
        raise ConfigError(
            f"the graph needs exactly one {role} service (subComponentType: {role}, or a "
            f"service named {role}); found {found} among {', '.join(names)}"
        )
    return by_type[0]


class LocalScaling:
    """`ScalingConnector` over the `dynamo serve` control socket."""

    def __init__(self, settings: ConnectorSettings, connector: LocalConnector | None = None):
        self._settings = settings
        self._connector = connector or LocalConnector.from_env()

    async def _services(self) -> dict[Role, tuple[str, int]]:
        status = await self._connector.status()
        services: list[dict[str, Any]] = list(status.get("services", []))
        explicit = {
            "prefill": self._settings.prefill_service,
            "decode": self._settings.decode_service,
        }
        found: dict[Role, tuple[str, int]] = {}
        for role in self._settings.roles:
            name = find_service(services, role, explicit[role])
            entry = next(s for s in services if s["name"] == name)
            found[role] = (name, len(entry.get("replicas", [])))
        return found

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
