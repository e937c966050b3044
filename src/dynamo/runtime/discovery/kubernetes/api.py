"""The few calls Kubernetes discovery makes, on the shared client layer (`dynamo.runtime.kube`):
ConfigMaps of one namespace selected by one label, and EndpointSlices by another."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from dynamo.runtime.kube import KubeApiError, KubeClient

# Discovery's name for the client layer's error (status, transient; 410 is its subclass).
KubeStatusError = KubeApiError
FIELD_MANAGER = "dynamo-discovery"


class ConfigMapClient:
    """ConfigMaps of one namespace selected by one label, and EndpointSlices by another
    (`watched` names which: "configmaps" or "endpointslices")."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        label: tuple[str, str],
        slice_label: tuple[str, str],
    ) -> None:
        self._client, self.namespace = client, namespace
        self._watched = {
            "configmaps": ("v1", "ConfigMap", label),
            "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice", slice_label),
        }

    @classmethod
    async def connect(
        cls, namespace: str | None, label: tuple[str, str], slice_label: tuple[str, str], *,
        config: Any = None, timeout_s: float = 5.0,
    ) -> ConfigMapClient:  # fmt: skip
        """In-cluster service account, else `KUBECONFIG`/`~/.kube/config` (or `config`, a
        lightkube `KubeConfig`)."""
        client = await KubeClient.connect(
            kubeconfig=config, field_manager=FIELD_MANAGER, timeout_s=timeout_s
        )
        return cls(client, namespace or client.namespace, label, slice_label)

    async def close(self) -> None:
        await self._client.close()

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        body = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        return await self._client.create(body)

    async def merge_patch(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._client.patch("v1", "ConfigMap", name, self.namespace, patch)

    async def get(self, name: str) -> dict[str, Any] | None:
        return await self._client.get("v1", "ConfigMap", name, self.namespace)

    async def delete(self, name: str) -> bool:
        """Delete `name`; False when it was already gone."""
        return await self._client.delete("v1", "ConfigMap", name, self.namespace)

    async def pod_uid(self, name: str) -> str:
        pod = await self._client.get("v1", "Pod", name, self.namespace)
        if pod is None:
            raise KubeApiError(f"get Pod {self.namespace}/{name}: 404: not found", status=404)
        return str(pod.get("metadata", {}).get("uid") or "")

    async def list(self, watched: str = "configmaps") -> tuple[list[dict[str, Any]], str | None]:
        """Every labelled object of `watched` and the resourceVersion to watch from."""
        api_version, kind, (key, value) = self._watched[watched]
        found = await self._client.list(api_version, kind, self.namespace, {key: value})
        return found.items, found.resource_version

    async def watch(
        self, resource_version: str | None, watched: str = "configmaps"
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """(ADDED|MODIFIED|DELETED|BOOKMARK, object) after `resource_version`; raises on errors
        (410 Gone included: the caller lists again)."""
        api_version, kind, (key, value) = self._watched[watched]
        events = self._client.watch(
            api_version, kind, self.namespace, {key: value}, resource_version=resource_version
        )
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
