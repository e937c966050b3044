"""Async access to the Kubernetes API for the operator and `dynamo check` (lightkube), plain
dicts in and out. Connection and API failures become `KubernetesApiError` here, at one seam.

Configured like any Kubernetes client (in-cluster service account, else `KUBECONFIG` /
`~/.kube/config`), or explicitly with a `KubeConnection` (tests point it at an emulator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient, KubeConfig, codecs
from lightkube.core.exceptions import ConfigError as LightkubeConfigError
from lightkube.core.exceptions import LoadResourceError
from lightkube.core.resource import NamespacedResource
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from dynamo.runtime.errors import ConfigError, UnavailableError

# Custom resources the operator reads or writes: (apiVersion, kind) -> (plural, namespaced).
CUSTOM_RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("nvidia.com/v1alpha1", "DynamoGraphDeployment"): ("dynamographdeployments", True),
    ("nvidia.com/v1alpha1", "DynamoGraphDeploymentRequest"): (
        "dynamographdeploymentrequests",
        True,
    ),
    ("nvidia.com/v1alpha1", "DynamoComponentDeployment"): ("dynamocomponentdeployments", True),
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): ("leaderworkersets", True),
}


class KubernetesApiError(UnavailableError):
    """The API server refused a request or could not be reached (retry later)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class KubeConnection:
    """An explicit API server to talk to (instead of in-cluster or kubeconfig settings)."""

    server: str
    token: str | None = None
    insecure: bool = False
    ca_path: str | None = None

    def kubeconfig(self) -> KubeConfig:
        cluster: dict[str, Any] = {"server": self.server}
        if self.insecure:
            cluster["insecure-skip-tls-verify"] = True
        if self.ca_path:
            cluster["certificate-authority"] = self.ca_path
        user: dict[str, Any] = {"token": self.token} if self.token else {"username": "anonymous"}
        return KubeConfig.from_dict(
            {
                "clusters": [{"name": "target", "cluster": cluster}],
                "users": [{"name": "user", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "target", "user": "user"}}],
                "current-context": "ctx",
            }
        )


def resource_type(api_version: str, kind: str) -> Any:
    """The lightkube resource class of `apiVersion`/`kind` (generic for custom resources)."""
    custom = CUSTOM_RESOURCES.get((api_version, kind))
    if custom is not None:
        group, version = api_version.split("/")
        plural, namespaced = custom
        create = create_namespaced_resource if namespaced else create_global_resource
        return create(group, version, kind, plural)
    try:
        return resource_registry.load(api_version, kind)
    except (LoadResourceError, ImportError) as exc:
        raise ConfigError(f"unknown Kubernetes kind {api_version}/{kind}") from exc


def _plain(obj: Any) -> dict[str, Any]:
    return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)


def _status_code(exc: Exception) -> int:
    """HTTP status of a refused request (0 when the server was not reached). lightkube raises
    `ApiError` only for a bare `application/json` content type, so both forms are read."""
    if isinstance(exc, ApiError) and exc.status is not None and exc.status.code:
        return int(exc.status.code)
    if isinstance(exc, httpx2.HTTPStatusError):
        return int(exc.response.status_code)
    return 0


def _error(action: str, exc: Exception) -> KubernetesApiError:
    code = _status_code(exc)
    if isinstance(exc, ApiError) and exc.status is not None:
        return KubernetesApiError(f"{action}: {code} {exc.status.message}", status=code)
    if isinstance(exc, httpx2.HTTPStatusError):
        return KubernetesApiError(f"{action}: {code} {exc.response.text[:200]}", status=code)
    return KubernetesApiError(f"{action}: {type(exc).__name__}: {exc}")


class KubeApi:
    """One lightkube client per process; every method takes and returns plain dicts."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @classmethod
    def connect(cls, connection: KubeConnection | None = None) -> KubeApi:
        """Use `connection`, else the in-cluster service account, else the kubeconfig."""
        try:
            config = connection.kubeconfig() if connection else KubeConfig.from_env()
        except LightkubeConfigError as exc:
            raise ConfigError(f"no Kubernetes configuration: {exc}") from exc
        return cls(AsyncClient(config=config, field_manager="dynamo-operator"))

    async def close(self) -> None:
        await self._client.close()

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        res = resource_type(api_version, kind)
        try:
            return _plain(await self._client.get(res, name, namespace=namespace))
        except httpx2.HTTPError as exc:
            if _status_code(exc) == 404:
                return None
            raise _error(f"get {kind} {name}", exc) from exc

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        what = f"create {obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        try:
            resource_type(obj["apiVersion"], obj["kind"])  # registers custom kinds for codecs
            return _plain(await self._client.create(codecs.from_dict(dict(obj))))
        except httpx2.HTTPError as exc:
            raise _error(what, exc) from exc

    async def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Mapping[str, Any],
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        """A JSON merge patch of the object (or of its status subresource)."""
        res = resource_type(api_version, kind)
        if status:
            res = res.Status
        try:
            result = await self._client.patch(
                res, name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE
            )
        except httpx2.HTTPError as exc:
            raise _error(f"patch {kind} {name}", exc) from exc
        return _plain(result)

    async def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> bool:
        """Delete the object; False when it was already gone."""
        res = resource_type(api_version, kind)
        try:
            await self._client.delete(res, name, namespace=namespace)
        except httpx2.HTTPError as exc:
            if _status_code(exc) == 404:
                return False
            raise _error(f"delete {kind} {name}", exc) from exc
        return True

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind (all namespaces when `namespace` is None) matching `labels`.
        An unknown kind (its CRD not installed) lists as empty."""
        res = resource_type(api_version, kind)
        selector: dict[str, Any] = dict(labels or {})
        scope: Any = None
        if issubclass(res, NamespacedResource):
            scope = namespace if namespace is not None else ALL_NS
        found: list[dict[str, Any]] = []
        try:
            async for item in self._client.list(res, namespace=scope, labels=selector or None):
                obj = _plain(item)
                have = obj.get("metadata", {}).get("labels") or {}
                # Filter here too: some API servers (and emulators) ignore the selector.
                if all(have.get(k) == v for k, v in selector.items()):
                    found.append(obj)
        except httpx2.HTTPError as exc:
            if _status_code(exc) == 404:
                return []
            raise _error(f"list {kind}", exc) from exc
        return found
