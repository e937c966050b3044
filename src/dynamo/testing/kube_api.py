"""An in-memory Kubernetes API server over real HTTP for operator tests (kmock underneath).

kmock's emulator stores objects and serves list/watch/get/create/merge-patch/delete. This
subclass adds what the operator relies on from a real API server: label selectors on list and
watch, server-side apply and `managedFields` (`dynamo.testing.kube_ssa`), `uid`, `generation`
(bumped when `spec` changes), `creationTimestamp`, the default of a workload's `replicas`, and
the garbage collector that deletes objects whose controller owner was deleted. It declares
every resource the operator and `dynamo check` use. A test double: the product never imports it.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import aiohttp.web
import kmock
from typing_extensions import override

from dynamo.testing.kube_labels import Requirement, SelectorError, parse_selector
from dynamo.testing.kube_ssa import (
    ApplyConflictError,
    Owners,
    read_owners,
    record_update,
    server_side_apply,
    write_owners,
)

APPLY_PATCH = "application/apply-patch+yaml"
# Workloads whose `spec.replicas` the API server defaults to 1.
DEFAULT_ONE_REPLICA = frozenset({"deployments", "leaderworkersets"})
_ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
# (group/version/plural, kind, namespaced, subresources)
RESOURCES: tuple[tuple[str, str, bool, set[str]], ...] = (
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, set()),
    ("v1/namespaces", "Namespace", False, set()),
    ("v1/nodes", "Node", False, {"status"}),
    ("storage.k8s.io/v1/storageclasses", "StorageClass", False, set()),
    ("v1/events", "Event", True, set()),
    ("v1/configmaps", "ConfigMap", True, set()),
    ("v1/secrets", "Secret", True, set()),
    ("v1/services", "Service", True, {"status"}),
    ("v1/serviceaccounts", "ServiceAccount", True, set()),
    ("v1/persistentvolumeclaims", "PersistentVolumeClaim", True, {"status"}),
    ("v1/pods", "Pod", True, {"status"}),
    ("discovery.k8s.io/v1/endpointslices", "EndpointSlice", True, set()),
    ("apps/v1/deployments", "Deployment", True, {"status", "scale"}),
    ("batch/v1/jobs", "Job", True, {"status"}),
    ("rbac.authorization.k8s.io/v1/roles", "Role", True, set()),
    ("rbac.authorization.k8s.io/v1/rolebindings", "RoleBinding", True, set()),
    ("leaderworkerset.x-k8s.io/v1/leaderworkersets", "LeaderWorkerSet", True, {"status"}),
    ("grove.io/v1alpha1/podcliquesets", "PodCliqueSet", True, {"status"}),
    ("grove.io/v1alpha1/podcliques", "PodClique", True, {"status", "scale"}),
    (
        "grove.io/v1alpha1/podcliquescalinggroups",
        "PodCliqueScalingGroup",
        True,
        {"status", "scale"},
    ),
)
DYNAMO_RESOURCES: tuple[tuple[str, str, bool, set[str]], ...] = (
    ("nvidia.com/v1alpha1/dynamographdeployments", "DynamoGraphDeployment", True, {"status"}),
    (
        "nvidia.com/v1alpha1/dynamographdeploymentrequests",
        "DynamoGraphDeploymentRequest",
        True,
        {"status"},
    ),
    (
        "nvidia.com/v1alpha1/dynamocomponentdeployments",
        "DynamoComponentDeployment",
        True,
        {"status", "scale"},
    ),
)


def object_path(api_version: str, plural: str, namespace: str | None, name: str = "") -> str:
    """The REST path of an object (or of its collection when `name` is empty)."""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{root}{ns}/{plural}" + (f"/{name}" if name else "")


class FakeKubeApi(kmock.KubernetesEmulator):
    """kmock's emulator plus server-side metadata and owner-reference garbage collection."""

    _versions = itertools.count(1)
    # kmock logs every request for assertions and, to route each new request, re-filters the
    # whole log: quadratic over a long test. The operator tests assert on objects, not on
    # requests, so only the most recent requests are kept.
    REQUEST_LOG_KEPT = 4

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # One write at a time: ownership is computed from the object as it is before a write.
        self._writes = asyncio.Lock()

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        log: list[kmock.Request] = self._requests
        if len(log) > 2 * self.REQUEST_LOG_KEPT:
            del log[: -self.REQUEST_LOG_KEPT]
        writes = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)
        if request.resource is None or request.action not in writes:
            return await super()._handle(request)
        if request.action == kmock.action.UPDATE and _is_apply(request):
            async with self._writes:
                return await self._serve_apply(request)
        async with self._writes:
            if isinstance(request.data, dict):
                if request.action == kmock.action.CREATE:
                    self._stamp_new(request.data)
                    self._record_create(request)
                elif request.action == kmock.action.UPDATE:
                    self._record_update(request)
                    if request.subresource is None:
                        self._bump_generation(request)
            response = await super()._handle(request)
        if request.action == kmock.action.DELETE and response.status < 300:
            await self._collect_garbage()
        return response

    async def _serve_apply(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """Server-side apply (`application/apply-patch+yaml`): see `dynamo.testing.kube_ssa`."""
        config, resource = request.data, request.resource
        assert resource is not None  # checked by the caller
        name = (config.get("metadata") or {}).get("name") if isinstance(config, dict) else None
        if not isinstance(config, dict) or name != request.name or request.subresource:
            error = kmock.KubernetesError(
                status=400, reason="BadRequest", message="apply needs the object, named as the URL"
            )
            return await self._render_error(error)
        key: Any = (resource, request.namespace, request.name)
        async with self._lock:
            exists = key in self._objects and not self._objects[key].deleted
            live = copy.deepcopy(self._objects[key].raw) if exists else None
            try:
                result = server_side_apply(
                    live, config, _manager(request), force=request.params.get("force") == "true"
                )
            except ApplyConflictError as exc:
                conflict = kmock.KubernetesError(status=409, reason="Conflict", message=str(exc))
                return await self._render_error(conflict)
            obj = result.obj
            _default(resource.plural or "", obj)
            if live is not None and _unchanged(live, obj, result.owners):
                return aiohttp.web.json_response(live)  # no new version, no event
            api_version = str(config.get("apiVersion", ""))
            meta = obj.setdefault("metadata", {})
            meta["managedFields"] = write_owners(result.owners, api_version, _now())
            if live is None:
                meta["namespace"] = request.namespace
                self._stamp_new(obj)
                if key in self._objects:
                    self._objects[key].history.append(obj)
                else:
                    self._objects[key] = obj
            else:
                meta["resourceVersion"] = str(next(self._versions))
                if obj.get("spec") != live.get("spec"):
                    meta["generation"] = int(live["metadata"].get("generation", 1)) + 1
                self._objects[key].history.append(obj)
            raw = self._objects[key].raw
            event = "ADDED" if live is None else "MODIFIED"
            await self._buses[resource].put({"type": event, "object": raw})
        return aiohttp.web.json_response(raw, status=201 if live is None else 200)

    def _record_create(self, request: kmock.Request) -> None:
        obj: dict[str, Any] = request.data
        owners = record_update(None, obj, _manager(request))
        if request.resource is not None:
            _default(request.resource.plural or "", obj)
        version = str(obj.get("apiVersion", ""))
        obj.setdefault("metadata", {})["managedFields"] = write_owners(owners, version, _now())

    def _record_update(self, request: kmock.Request) -> None:
        """Put the fields this write changes in its manager's set (into the request, which
        kmock merges into the object); a write that sets `managedFields` itself keeps them."""
        key: Any = (request.resource, request.namespace, request.name)
        patch: dict[str, Any] = request.data
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404
        if "managedFields" in (patch.get("metadata") or {}):
            return
        old = self.objects[key].raw
        new = _merge_patch(old, patch)
        if request.resource is not None and _default(request.resource.plural or "", new):
            patch.setdefault("spec", {})["replicas"] = new["spec"]["replicas"]
        owners = record_update(old, new, _manager(request), request.subresource or "")
        version = str(old.get("apiVersion", ""))
        meta = patch.setdefault("metadata", {})
        meta["managedFields"] = write_owners(owners, version, _now())

    @override
    async def _serve_list(self, request: kmock.Request) -> Any:
        matches = _label_filter(request)
        listing: dict[str, Any] = await super()._serve_list(request)  # type: ignore[assignment]
        listing["items"] = [o for o in listing["items"] if matches(_labels(o))]
        return listing

    @override
    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        matches = _label_filter(request)
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or matches(_labels(event.get("object") or {})):
                yield event

    def _stamp_new(self, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["generation"] = 1
        meta["resourceVersion"] = str(next(self._versions))

    def _bump_generation(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        if request.resource is None or request.name is None:
            return
        key = (request.resource, request.namespace, request.name)
        if "spec" not in request.data or key not in self.objects:
            return
        current = self.objects[key]
        if current.deleted:
            return
        spec = current.get("spec")
        if _merge_patch(spec, request.data["spec"]) == spec:
            return  # like a real API server: only a change of spec is a new generation
        meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1

    def live_objects(self) -> list[tuple[Any, str | None, str, dict[str, Any]]]:
        """(resource, namespace, name, body) of every object that exists now."""
        out = []
        for (resource, namespace, name), obj in self.objects.items():
            if not obj.deleted:
                out.append((resource, namespace, name, obj.raw))
        return out

    async def _collect_garbage(self) -> None:
        """Delete, over HTTP (so watchers see it), every object whose owners are all gone."""
        while True:
            live = self.live_objects()
            uids = {body.get("metadata", {}).get("uid") for *_, body in live}
            orphans = []
            for resource, namespace, name, body in live:
                owners = body.get("metadata", {}).get("ownerReferences") or []
                if owners and not any(o.get("uid") in uids for o in owners):
                    version = f"{resource.group}/{resource.version}".lstrip("/")
                    orphans.append(object_path(version, resource.plural, namespace, name))
            if not orphans:
                return
            async with aiohttp.ClientSession(base_url=str(self.url)) as session:
                for path in orphans:
                    async with session.delete(path) as response:
                        await response.read()


def _is_apply(request: kmock.Request) -> bool:
    content_type = request.headers.get("Content-Type") or request.headers.get("content-type")
    return str(content_type or "").startswith(APPLY_PATCH)


def _manager(request: kmock.Request) -> str:
    """The request's field manager: `?fieldManager=`, else its client's name, as the server
    derives it from the User-Agent."""
    agent = request.headers.get("User-Agent") or request.headers.get("user-agent") or "unknown"
    return request.params.get("fieldManager") or str(agent).split("/")[0]


def _default(plural: str, obj: dict[str, Any]) -> bool:
    """Fill `spec.replicas` (1) of the workloads that default it; True when it did."""
    spec = obj.get("spec")
    if plural not in DEFAULT_ONE_REPLICA or not isinstance(spec, dict) or "replicas" in spec:
        return False
    spec["replicas"] = 1
    return True


def _unchanged(live: Mapping[str, Any], new: Mapping[str, Any], owners: Owners) -> bool:
    def bare(obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
        return {**obj, "metadata": meta}

    return bare(live) == bare(new) and read_owners(live) == owners


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _label_filter(request: kmock.Request) -> Requirement:
    """The request's `labelSelector` as a predicate; a bad one is a 400 like the real server's."""
    try:
        return parse_selector(request.params.get("labelSelector", ""))
    except SelectorError as exc:
        raise kmock.KubernetesError(status=400, reason="BadRequest", message=str(exc)) from exc


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def declare_resources(api: kmock.KubernetesEmulator, *, with_dynamo_crds: bool = True) -> None:
    """Declare the built-in resources (and, unless told otherwise, Dynamo's CRDs)."""
    table = RESOURCES + (DYNAMO_RESOURCES if with_dynamo_crds else ())
    for key, kind, namespaced, subresources in table:
        api.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=set(_ALL_VERBS), subresources=subresources
        )


@asynccontextmanager
async def fake_kube_api(
    *, with_dynamo_crds: bool = True, api_type: type[FakeKubeApi] = FakeKubeApi
) -> AsyncIterator[FakeKubeApi]:
    """A running fake API server (of `api_type`: a subclass may count or react to
    requests); its URL is `str(api.url)`."""
    async with api_type() as api, kmock.Server(api):
        declare_resources(api, with_dynamo_crds=with_dynamo_crds)
        yield api


class KubeHttp:
    """`kubectl`-like calls against the fake (create, get, patch, delete), for tests."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self._session.request(method, path, json=body, headers=headers) as response:
            payload = await response.json(content_type=None)
            return response.status, payload

    async def create(self, obj: Mapping[str, Any], plural: str) -> dict[str, Any]:
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], plural, meta.get("namespace"))
        status, payload = await self.request("POST", path, dict(obj))
        if status >= 300:
            raise AssertionError(f"create {path}: {status} {payload}")
        return dict(payload)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the object's spec becomes after `patch`)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out
