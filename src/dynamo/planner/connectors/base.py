"""How the planner changes replica counts: one protocol, one implementation per environment.

The planner speaks in *roles* (`prefill`, `decode`; in aggregated mode the aggregated worker is
the `decode` role). A connector maps roles to the services of the graph it runs in (by
`subComponentType` first, then by service name), reads the replicas that are live *now* (never
a cached desired value: decisions start from what runs) and asks its environment to scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["prefill", "decode"]
ROLES: tuple[Role, ...] = ("prefill", "decode")
Environment = Literal["local", "kubernetes", "virtual"]


@dataclass(frozen=True)
class ConnectorSettings:
    """What every connector may need; each reads only its own fields."""

    environment: Environment
    namespace: str  # the Dynamo namespace (DYN_NAMESPACE)
    roles: tuple[Role, ...] = ROLES  # the roles this planner scales (agg mode: ("decode",))
    graph_name: str | None = None  # the DGD's name (DYN_PARENT_DGD_K8S_NAME), kubernetes only
    k8s_namespace: str | None = None  # the DGD's namespace (DYN_PARENT_DGD_K8S_NAMESPACE)
    prefill_service: str | None = None  # explicit service names override the lookup
    decode_service: str | None = None


class ScalingConnector(Protocol):
    """The planner's only way to act on its graph."""

    async def live_replicas(self) -> dict[Role, int]:
        """Replicas running now per role this planner scales (read fresh on every call)."""
        ...

    async def scale(self, targets: Mapping[Role, int], reason: str) -> None:
        """Ask for `targets` replicas per role; `reason` is the decision's one-line summary.

        Raises `ConfigError` when the graph has no service for a role, `TransportError` when
        the environment cannot be reached (the planner logs it and holds).
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
