"""The few calls Kubernetes discovery makes (ConfigMaps, EndpointSlices), over lightkube, plain
dicts in and out.

lightkube is imported here only, and only when a client is built, so the runtime works
without it. Its errors are translated at this seam: `KubeStatusError` carries the HTTP status
(0 when the API server was not reached).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from dynamo.runtime.errors import ConfigError, TransportError

TRANSIENT_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})


class KubeStatusError(TransportError):
    """The API server refused a request (`status`) or could not be reached (status 0)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES


def _translate(action: str, exc: Exception) -> KubeStatusError:
    """lightkube raises `ApiError` (with a Status) for some replies and plain
    `HTTPStatusError` for others (by content type); transport failures have no status."""
    api_status = getattr(exc, "status", None)
    status = int(getattr(api_status, "code", 0) or 0)
    detail = str(getattr(api_status, "message", "") or "")
    response = exc.__dict__.get("response")  # the property raises when unset
    if response is not None:
        status = status or int(getattr(response, "status_code", 0) or 0)
        if not detail:
            with contextlib.suppress(RuntimeError):  # a watch stream's body is not read
                detail = response.text[:300]
    detail = detail or str(exc) or type(exc).__name__
    return KubeStatusError(f"{action}: {status or 'unreachable'}: {detail}", status=status)


class ConfigMapClient:
    """ConfigMaps of one namespace selected by one label, and EndpointSlices by another
    (`watched` names which: "configmaps" or "endpointslices")."""

    def __init__(
        self, client: Any, namespace: str, label: tuple[str, str], slice_label: tuple[str, str]
    ) -> None:
        from httpx2 import HTTPError
        from lightkube.core.exceptions import NotReadyError
        from lightkube.resources.core_v1 import ConfigMap, Pod
        from lightkube.resources.discovery_v1 import EndpointSlice

        self._client, self.namespace = client, namespace
        self._configmap, self._pod = ConfigMap, Pod
        self._watched: dict[str, tuple[Any, tuple[str, str], str]] = {
            "configmaps": (ConfigMap, label, "ConfigMaps"),
            "endpointslices": (EndpointSlice, slice_label, "EndpointSlices"),
        }
        self._errors: tuple[type[Exception], ...] = (HTTPError, OSError)
        self._not_ready = NotReadyError

    @classmethod
    async def connect(
        cls, namespace: str | None, label: tuple[str, str], slice_label: tuple[str, str], *,
        config: Any = None, timeout_s: float = 5.0,
    ) -> ConfigMapClient:  # fmt: skip
        """In-cluster service account, else `KUBECONFIG`/`~/.kube/config` (or `config`)."""
        try:
            import httpx2
            from lightkube import AsyncClient, KubeConfig
            from lightkube.core.exceptions import ConfigError as LightkubeConfigError
        except ImportError as exc:
            raise ConfigError(
                "--discovery-backend kubernetes needs lightkube: pip install 'pydynamo[operator]'"
            ) from exc
        try:
            if config is None:
                config = await asyncio.to_thread(KubeConfig.from_env)
            client = AsyncClient(
                config=config,
                namespace=namespace,
                timeout=httpx2.Timeout(timeout_s),
                field_manager="dynamo-discovery",
            )
        except (LightkubeConfigError, OSError, ValueError) as exc:
            raise ConfigError(f"no Kubernetes configuration for discovery: {exc}") from exc
        return cls(client, namespace or client.namespace, label, slice_label)

    async def close(self) -> None:
        await self._client.close()

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        body = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        try:
            created = await self._client.create(
                self._configmap.from_dict(body), namespace=self.namespace
            )
        except self._errors as exc:
            raise _translate(f"create ConfigMap {self.namespace}/{name}", exc) from exc
        return dict(created.to_dict())

    async def merge_patch(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        from lightkube.types import PatchType

        try:
            patched = await self._client.patch(
                self._configmap, name, dict(patch), namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )  # fmt: skip
        except self._errors as exc:
            raise _translate(f"patch ConfigMap {self.namespace}/{name}", exc) from exc
        return dict(patched.to_dict())

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self._client.get(self._configmap, name, namespace=self.namespace)
        except self._errors as exc:
            error = _translate(f"get ConfigMap {self.namespace}/{name}", exc)
            if error.status == 404:
                return None
            raise error from exc
        return dict(found.to_dict())

    async def delete(self, name: str) -> bool:
        """Delete `name`; False when it was already gone."""
        try:
            await self._client.delete(self._configmap, name, namespace=self.namespace)
        except self._errors as exc:
            error = _translate(f"delete ConfigMap {self.namespace}/{name}", exc)
            if error.status == 404:
                return False
            raise error from exc
        return True

    async def pod_uid(self, name: str) -> str:
        try:
            pod = await self._client.get(self._pod, name, namespace=self.namespace)
        except self._errors as exc:
            raise _translate(f"get Pod {self.namespace}/{name}", exc) from exc
        return str(pod.metadata.uid or "")

    async def list(self, watched: str = "configmaps") -> tuple[list[dict[str, Any]], str | None]:
        """Every labelled object of `watched` and the resourceVersion to watch from."""
        resource, (key, value), plural = self._watched[watched]
        listing = self._client.list(resource, namespace=self.namespace, labels={key: value})
        try:
            items = [dict(obj.to_dict()) async for obj in listing]
        except self._errors as exc:
            raise _translate(f"list {plural} in {self.namespace}", exc) from exc
        try:
            version: str | None = listing.resourceVersion
        except self._not_ready:
            version = None
        return items, version

    async def watch(
        self, resource_version: str | None, watched: str = "configmaps"
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """(ADDED|MODIFIED|DELETED|BOOKMARK, object) after `resource_version`; raises on errors
        (410 Gone included: the caller lists again)."""
        resource, (key, value), plural = self._watched[watched]
        stream = self._client.watch(
            resource, namespace=self.namespace, labels={key: value},
            resource_version=resource_version,
        )  # fmt: skip
        try:
            async for kind, obj in stream:
                yield str(kind), dict(obj.to_dict())
        except self._errors as exc:
            raise _translate(f"watch {plural} in {self.namespace}", exc) from exc
        finally:
            await stream.aclose()
