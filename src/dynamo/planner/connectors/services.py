"""Which service of a graph plays which planner role (a pure function of `spec.services`).

Order: an explicit name from the settings; else the one worker whose `subComponentType` (or
`componentType`) is the role; else the one worker without a sub-role whose name contains the
role (`VllmPrefillWorker` -> prefill); else, for an aggregated planner (decode role only), the
graph's only worker. None found, or two equally good, is a `ConfigError` that says what to set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo.deploy.graph import WORKER_COMPONENT_TYPES
from dynamo.planner.connectors.base import ConnectorSettings, Role
from dynamo.runtime.errors import ConfigError


def _is_worker(spec: Mapping[str, Any]) -> bool:
    kind = spec.get("componentType")
    return kind is None or kind in WORKER_COMPONENT_TYPES


def _sub_role(spec: Mapping[str, Any]) -> str | None:
    sub = spec.get("subComponentType")
    if sub:
        return str(sub)
    kind = spec.get("componentType")
    return str(kind) if kind in ("prefill", "decode") else None


def _one(found: list[str], role: Role, how: str, graph: str) -> str | None:
    if len(found) > 1:
        raise ConfigError(
            f"{graph}: services {', '.join(sorted(found))} all match the {role} role {how}; "
            f"give exactly one subComponentType: {role}"
        )
    return found[0] if found else None


def _explicit(settings: ConnectorSettings, role: Role) -> str | None:
    return settings.prefill_service if role == "prefill" else settings.decode_service


def pick_service(
    services: Mapping[str, Mapping[str, Any]],
    settings: ConnectorSettings,
    role: Role,
    *,
    graph: str,
) -> str:
    """The name (key of `spec.services`) of the service that plays `role`."""
    explicit = _explicit(settings, role)
    if explicit is not None:
        if explicit not in services:
            raise ConfigError(
                f"{graph}: the {role} service {explicit!r} is not one of its services "
                f"({', '.join(sorted(services)) or 'none'})"
            )
        return explicit
    workers = {name: spec for name, spec in services.items() if _is_worker(spec)}
    by_type = [name for name, spec in workers.items() if _sub_role(spec) == role]
    found = _one(by_type, role, "by subComponentType", graph)
    if found is None:
        by_name = [
            name
            for name, spec in workers.items()
            if _sub_role(spec) is None and role in name.lower()
        ]
        found = _one(by_name, role, "by name", graph)
    if found is None and role == "decode" and settings.roles == ("decode",):
        plain = [name for name, spec in workers.items() if _sub_role(spec) != "prefill"]
        found = plain[0] if len(plain) == 1 else None
    if found is None:
        listed = ", ".join(sorted(services)) or "none"
        raise ConfigError(
            f"{graph} has no service for the {role} role: set subComponentType: {role} on "
            f"the worker service that does {role} (services: {listed})"
        )
    return found


def pick_services(
    services: Mapping[str, Mapping[str, Any]], settings: ConnectorSettings, *, graph: str
) -> dict[Role, str]:
    """Role -> service name for every role the planner scales; one service per role."""
    chosen = {role: pick_service(services, settings, role, graph=graph) for role in settings.roles}
    names = list(chosen.values())
    if len(set(names)) != len(names):
        raise ConfigError(
            f"{graph}: one service ({names[0]}) cannot be both the prefill and the decode role"
        )
    return chosen
