"""The `kubernetes` connector: scale the services of the DynamoGraphDeployment the planner runs in.

It reads the DGD (`DYN_PARENT_DGD_K8S_NAME` / `_NAMESPACE`, injected by the operator), maps each
role to a service (`subComponentType` first, then the service's name), reports the replicas the
operator found *ready* (`status.services.<svc>.readyReplicas`) and scales with one JSON merge
patch of `spec.services.<svc>.replicas`; the operator then scales the service's Deployment. The
DGD CRD has no scale subresource (one DGD holds many services), so a merge patch it is. Every
API call goes through `dynamo.runtime.kube`; it needs `get` and `patch` on
dynamographdeployments, which is exactly the planner Role the operator creates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dynamo.planner.connectors.base import ConnectorSettings, Role
from dynamo.planner.connectors.services import pick_services
from dynamo.runtime.errors import ConfigError, UnavailableError
from dynamo.runtime.kube import CustomKind, KubeApiError, KubeClient, KubeConnection

log = logging.getLogger(__name__)

DGD_API_VERSION = "nvidia.com/v1alpha1"
DGD_KIND = "DynamoGraphDeployment"
DGD = CustomKind(DGD_API_VERSION, DGD_KIND, "dynamographdeployments")
FIELD_MANAGER = "dynamo-planner"
_FORBIDDEN = (401, 403)


class KubernetesScaling:
    """`ScalingConnector` over the planner's own DGD. `connection` names an API server (tests,
    or a planner outside the cluster); by default the pod's service account is used."""

    def __init__(
        self, settings: ConnectorSettings, *, connection: KubeConnection | None = None
    ) -> None:
        if not settings.graph_name:
            raise ConfigError(
                "the kubernetes planner connector needs the graph's name: "
                "DYN_PARENT_DGD_K8S_NAME (the operator sets it in a DGD's Planner service)"
            )
        self._settings = settings
        self._connection = connection
        self._client: KubeClient | None = None
        self._name = settings.graph_name

    @property
    def graph(self) -> str:
        """`namespace/name` of the DGD (the namespace once connected)."""
        return f"{self._namespace_or_default()}/{self._name}"

    def _namespace_or_default(self) -> str:
        if self._settings.k8s_namespace:
            return self._settings.k8s_namespace
        return self._client.namespace if self._client is not None else "?"

    async def _connected(self) -> KubeClient:
        if self._client is None:
            self._client = await KubeClient.connect(
                self._connection, field_manager=FIELD_MANAGER, custom_kinds=[DGD]
            )
        return self._client

    def _refused(self, exc: KubeApiError) -> Exception:
        """A 401/403 is the planner's RBAC, not a passing outage: say which grant is missing."""
        if exc.status in _FORBIDDEN:
            return ConfigError(
                f"the planner may not read or patch DynamoGraphDeployment {self.graph}: {exc} "
                "(it needs get and patch on dynamographdeployments.nvidia.com; the operator "
                "grants them to the `<dgd>-planner` ServiceAccount)"
            )
        return exc

    async def _read_graph(self) -> dict[str, Any]:
        client = await self._connected()
        namespace = self._namespace_or_default()
        try:
            body = await client.get(DGD_API_VERSION, DGD_KIND, self._name, namespace)
        except KubeApiError as exc:
            raise self._refused(exc) from exc
        if body is None:
            raise ConfigError(
                f"DynamoGraphDeployment {namespace}/{self._name} does not exist "
                "(DYN_PARENT_DGD_K8S_NAME / DYN_PARENT_DGD_K8S_NAMESPACE name the planner's graph)"
            )
        return body

    def _services(self, body: Mapping[str, Any]) -> dict[Role, str]:
        services = (body.get("spec") or {}).get("services") or {}
        return pick_services(services, self._settings, graph=f"DynamoGraphDeployment {self.graph}")

    async def live_replicas(self) -> dict[Role, int]:
        """Ready replicas per role, as the operator last reported them in the DGD's status."""
        body = await self._read_graph()
        chosen = self._services(body)
        reported = (body.get("status") or {}).get("services") or {}
        live: dict[Role, int] = {}
        for role, service in chosen.items():
            entry = reported.get(service)
            if not isinstance(entry, Mapping):
                # Never guess 0: a planner that thinks nothing runs would scale from nothing.
                raise UnavailableError(
                    f"DynamoGraphDeployment {self.graph}: the operator has not reported "
                    f"service {service} in status.services yet"
                )
            live[role] = int(entry.get("readyReplicas") or 0)
        return live

    async def scale(self, targets: Mapping[Role, int], reason: str) -> None:
        """One merge patch setting `spec.services.<svc>.replicas` for every role whose desired
        count differs from the target (none: no write)."""
        body = await self._read_graph()
        chosen = self._services(body)
        specs = (body.get("spec") or {}).get("services") or {}
        changes: dict[str, int] = {}
        for role, target in targets.items():
            if role not in chosen:
                raise ConfigError(f"this planner does not scale the {role} role")
            if target < 0:
                raise ConfigError(f"{role}: replicas must be >= 0, got {target}")
            service = chosen[role]
            if (specs.get(service) or {}).get("replicas") != target:
                changes[service] = target
        if not changes:
            return
        patch = {"spec": {"services": {svc: {"replicas": n} for svc, n in changes.items()}}}
        client = await self._connected()
        try:
            await client.patch(
                DGD_API_VERSION, DGD_KIND, self._name, self._namespace_or_default(), patch
            )
        except KubeApiError as exc:
            raise self._refused(exc) from exc
        scaled = ", ".join(f"{svc}={n}" for svc, n in sorted(changes.items()))
        log.info("scaled DynamoGraphDeployment %s: %s (%s)", self.graph, scaled, reason)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
