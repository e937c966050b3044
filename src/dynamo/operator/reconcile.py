"""Reconciling one graph against the API server: apply its manifests, remove the objects it no
longer needs, and read its workloads back into a status. The kopf handlers call these."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from dynamo.operator.apply import apply_patch, with_last_applied
from dynamo.operator.config import OperatorConfig
from dynamo.operator.labels import GRAPH_LABEL, GraphRef
from dynamo.operator.manifests import GraphManifests, build_manifests
from dynamo.operator.rbac import RBAC_API_VERSION
from dynamo.operator.status import graph_status
from dynamo.operator.workloads import LWS_API_VERSION
from dynamo.runtime.kube import KubeClient

DGD_API_VERSION = "nvidia.com/v1alpha1"
DGD_KIND = "DynamoGraphDeployment"
WORKLOAD_API_VERSIONS = {"Deployment": "apps/v1", "LeaderWorkerSet": LWS_API_VERSION}
# Kinds of per-graph objects that are deleted when the graph stops needing them. PVCs are
# kept (they hold data); the API server removes them with the graph.
PRUNABLE_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    (LWS_API_VERSION, "LeaderWorkerSet"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    (RBAC_API_VERSION, "Role"),
    (RBAC_API_VERSION, "RoleBinding"),
)


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def apply_object(api: KubeClient, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Create `obj`, or patch the live object towards it; returns the live object."""
    meta = obj["metadata"]
    live = await api.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
    if live is None:
        return await api.create(with_last_applied(obj))
    patch = apply_patch(live, obj)
    if not patch:
        return live
    return await api.patch(
        obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"), patch
    )


def _owned_by(obj: Mapping[str, Any], graph: GraphRef) -> bool:
    owners = obj.get("metadata", {}).get("ownerReferences") or []
    return any(o.get("uid") == graph.uid and o.get("kind") == DGD_KIND for o in owners)


async def prune(api: KubeClient, manifests: GraphManifests) -> list[str]:
    """Delete this graph's objects that its manifests no longer contain (e.g. a removed
    service); returns `Kind/name` of each deleted object."""
    graph = manifests.graph
    wanted = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects}
    deleted = []
    for api_version, kind in PRUNABLE_KINDS:
        found = await api.list(api_version, kind, graph.namespace, {GRAPH_LABEL: graph.name})
        for obj in found.items:
            name = obj["metadata"]["name"]
            if (kind, name) in wanted or not _owned_by(obj, graph):
                continue
            if await api.delete(api_version, kind, name, graph.namespace):
                deleted.append(f"{kind}/{name}")
    return deleted


def _status(
    body: Mapping[str, Any],
    manifests: GraphManifests,
    live: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, Any]:
    """The DGD status from its workloads as `live` has them (None: missing)."""
    generation = body.get("metadata", {}).get("generation")
    return graph_status(
        list(manifests.workloads),
        live,
        now=utc_now(),
        generation=int(generation) if generation is not None else None,
        previous=body.get("status"),
    )


async def reconcile_graph(
    api: KubeClient, body: Mapping[str, Any], config: OperatorConfig
) -> dict[str, Any]:
    """Bring the cluster to the DGD `body`; returns its new status. Raises `ConfigError`
    (invalid DGD, naming the field) or `KubeApiError` (retry)."""
    manifests = build_manifests(body, config)
    workload_of = {(w.kind, w.name): w.service for w in manifests.workloads}
    live: dict[str, Mapping[str, Any] | None] = {}
    for obj in manifests.objects:
        result = await apply_object(api, obj)
        service = workload_of.get((obj["kind"], obj["metadata"]["name"]))
        if service is not None:
            live[service] = result
    await prune(api, manifests)
    return _status(body, manifests, live)


async def observed_status(
    api: KubeClient, body: Mapping[str, Any], config: OperatorConfig
) -> dict[str, Any]:
    """The DGD status from its workloads as they are now (after a workload changed)."""
    manifests = build_manifests(body, config)
    ns = manifests.graph.namespace
    live = {
        w.service: await api.get(WORKLOAD_API_VERSIONS[w.kind], w.kind, w.name, ns)
        for w in manifests.workloads
    }
    return _status(body, manifests, live)
