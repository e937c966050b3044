"""Test doubles around the fake API server for Kubernetes discovery: the EndpointSlice
controller that the emulator lacks, an API server that counts writes and watch events, and
`FakePods`, which plays the kubelet (pods with a Ready condition behind a discovery Service).

`EndpointSliceController` watches Pods and Services over HTTP, as the real controller does,
and keeps one or more EndpointSlices per Service with a selector: every selected pod that has
an IP, `ready` from its Ready condition (always true with `publishNotReadyAddresses`), and
`terminating` once it is being deleted. Slices carry the Service's labels plus
`kubernetes.io/service-name`, are owned by the Service and hold at most 100 endpoints, a pod
staying in its slice while it exists. Nothing in the product imports this module.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
from typing_extensions import override

from dynamo.runtime.discovery.kubernetes.objects import DISCOVERY_SERVICE_LABEL, PodIdentity
from dynamo.testing.kube_api import FakeKubeApi, KubeHttp, object_path

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_ENDPOINTS_PER_SLICE = 100
_WRITES = {kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE}


class CountingKubeApi(FakeKubeApi):
    """The fake API server, counting writes (create, patch/update, delete) per resource plural
    and per (plural, object name), and the watch events it streams per plural."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: collections.Counter[str] = collections.Counter()
        self.object_writes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.watch_events: collections.Counter[str] = collections.Counter()

    @override
    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.action in _WRITES:
            plural = request.resource.plural or "?"
            self.writes[plural] += 1
            name = request.name
            if name is None and isinstance(request.data, dict):
                name = (request.data.get("metadata") or {}).get("name")
            self.object_writes[plural, str(name)] += 1
        return await super()._handle(request)

    @override
    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        plural = (request.resource.plural if request.resource is not None else None) or "?"
        async for event in super()._serve_watch(request):
            if isinstance(event, dict):
                self.watch_events[plural] += 1
            yield event


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _selects(service: dict[str, Any], pod: dict[str, Any]) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def endpoint(pod: dict[str, Any], *, publish_not_ready: bool) -> dict[str, Any] | None:
    """The slice endpoint of `pod`; None while it has no IP or has finished."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    terminating = bool(meta.get("deletionTimestamp"))
    ready = publish_not_ready or (_pod_ready(pod) and not terminating)
    return {
        "addresses": [status["podIP"]],
        "conditions": {"ready": ready, "serving": _pod_ready(pod), "terminating": terminating},
        "targetRef": {
            "kind": "Pod",
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        },
    }


class EndpointSliceController:
    """Maintains the EndpointSlices of every Service with a selector in the fake API server."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._placement: dict[tuple[str, str], dict[str, int]] = {}  # service -> pod -> slice
        self._written: dict[str, Any] = {}  # slice name -> body last written
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._synced = {"pods": asyncio.Event(), "services": asyncio.Event()}

    async def __aenter__(self) -> EndpointSliceController:
        self._session = aiohttp.ClientSession(base_url=self._url)
        for plural in ("pods", "services"):
            self._tasks.append(asyncio.create_task(self._watch(plural)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def _watch(self, plural: str) -> None:
        assert self._session is not None
        async with self._session.get(f"/api/v1/{plural}", params={"watch": "true"}) as response:
            self._synced[plural].set()
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                key = (meta.get("namespace") or "default", meta.get("name") or "")
                store = self._pods if plural == "pods" else self._services
                if event.get("type") == "DELETED":
                    store.pop(key, None)
                else:
                    store[key] = obj
                await self._reconcile(key[0])

    async def _reconcile(self, namespace: str) -> None:
        async with self._lock:
            for (ns, name), service in list(self._services.items()):
                if ns == namespace and (service.get("spec") or {}).get("selector"):
                    await self._sync_service(ns, name, service)

    async def _sync_service(self, namespace: str, name: str, service: dict[str, Any]) -> None:
        spec = service.get("spec") or {}
        publish = bool(spec.get("publishNotReadyAddresses"))
        endpoints: dict[str, dict[str, Any]] = {}
        for (ns, pod_name), pod in sorted(self._pods.items()):
            if ns == namespace and _selects(service, pod):
                found = endpoint(pod, publish_not_ready=publish)
                if found is not None:
                    endpoints[pod_name] = found
        placement = self._placement.setdefault((namespace, name), {})
        for pod_name in [p for p in placement if p not in endpoints]:
            del placement[pod_name]
        for pod_name in endpoints:
            if pod_name not in placement:
                sizes = collections.Counter(placement.values())
                index = 0
                while sizes[index] >= MAX_ENDPOINTS_PER_SLICE:
                    index += 1
                placement[pod_name] = index
        slices = {0} | set(placement.values())
        for index in sorted(slices):
            members = [endpoints[p] for p, i in sorted(placement.items()) if i == index]
            await self._write_slice(namespace, name, service, index, members)

    async def _write_slice(
        self,
        namespace: str,
        service_name: str,
        service: dict[str, Any],
        index: int,
        members: list[dict[str, Any]],
    ) -> None:
        meta = service.get("metadata") or {}
        slice_name = f"{service_name}-{index}"
        labels = {
            **(meta.get("labels") or {}),
            SERVICE_NAME_LABEL: service_name,
            MANAGED_BY_LABEL: CONTROLLER_NAME,
        }
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": slice_name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": service_name,
                        "uid": meta.get("uid"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "addressType": "IPv4",
            "endpoints": members,
            "ports": [
                {"name": p.get("name"), "port": p.get("port"), "protocol": "TCP"}
                for p in (service.get("spec") or {}).get("ports") or []
            ],
        }
        key = f"{namespace}/{slice_name}/{meta.get('uid')}"
        if self._written.get(key) == body:
            return
        assert self._session is not None
        http = KubeHttp(self._session)
        path = object_path("discovery.k8s.io/v1", "endpointslices", namespace, slice_name)
        if key in self._written:
            status, payload = await http.request("PATCH", path, body)
        else:
            status, payload = await http.request("POST", path.rsplit("/", 1)[0], body)
        if status >= 300:
            raise AssertionError(f"write {path}: {status} {payload}")
        self._written[key] = body

    async def synced(self) -> None:
        """Wait until both watches are established."""
        for event in self._synced.values():
            await event.wait()


@contextlib.asynccontextmanager
async def endpoint_slice_controller(api: FakeKubeApi) -> AsyncIterator[EndpointSliceController]:
    """A running controller for `api`, its watches established."""
    async with EndpointSliceController(str(api.url)) as controller:
        await controller.synced()
        yield controller


GRAPH_LABEL = "nvidia.com/dynamo-graph-deployment-name"


class FakePods:
    """Pods of one graph in one namespace behind its discovery Service (as the operator makes
    it); `set_ready` flips a pod's Ready condition as the kubelet does after its probes."""

    def __init__(self, http: KubeHttp, namespace: str, graph: str = "g") -> None:
        self.http, self.namespace, self.graph = http, namespace, graph
        self._ips = 0

    async def service(self) -> None:
        await self.http.create(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": f"{self.graph}-dynamo-discovery",
                    "namespace": self.namespace,
                    "labels": {DISCOVERY_SERVICE_LABEL: "true", GRAPH_LABEL: self.graph},
                },
                "spec": {
                    "clusterIP": "None",
                    "publishNotReadyAddresses": False,
                    "selector": {GRAPH_LABEL: self.graph},
                },
            },
            "services",
        )

    async def create(self, name: str, *, ready: bool) -> PodIdentity:
        self._ips += 1
        pod = await self.http.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {GRAPH_LABEL: self.graph},
                },
                "status": {
                    "podIP": f"10.{self._ips // 65536}.{self._ips // 256 % 256}.{self._ips % 256}",
                    "conditions": _ready(ready),
                },
            },
            "pods",
        )
        return PodIdentity(name, pod["metadata"]["uid"])

    async def set_ready(self, name: str, ready: bool) -> None:
        path = object_path("v1", "pods", self.namespace, name)
        status, body = await self.http.request(
            "PATCH", path, {"status": {"conditions": _ready(ready)}}
        )
        if status != 200:
            raise AssertionError(f"patch {path}: {status} {body}")

    async def delete(self, name: str) -> None:
        path = object_path("v1", "pods", self.namespace, name)
        status, body = await self.http.request("DELETE", path)
        if status != 200:
            raise AssertionError(f"delete {path}: {status} {body}")


def _ready(ready: bool) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "True" if ready else "False"}]
