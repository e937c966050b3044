"""Reconciling one graph against the API server: apply its manifests, remove the objects it no
longer needs, and read its workloads back into a status. The kopf handlers call these."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from dynamo.operator.apply import adoption_patch, made_by_client_side_apply
from dynamo.operator.config import OperatorConfig
from dynamo.operator.grove import GROVE_API_VERSION, scale_patch
from dynamo.operator.labels import GRAPH_LABEL, GraphRef
from dynamo.operator.manifests import GraphManifests, build_manifests
from dynamo.operator.mpi import PRIVATE_KEYS, needs_mpi
from dynamo.operator.rbac import RBAC_API_VERSION
from dynamo.operator.status import graph_status
from dynamo.operator.workloads import LWS_API_VERSION
from dynamo.runtime.errors import DynamoError
from dynamo.runtime.kube import KubeClient

DGD_API_VERSION = "nvidia.com/v1alpha1"
DGD_KIND = "DynamoGraphDeployment"
WORKLOAD_API_VERSIONS = {
    "Deployment": "apps/v1",
    "LeaderWorkerSet": LWS_API_VERSION,
    "PodClique": GROVE_API_VERSION,
    "PodCliqueScalingGroup": GROVE_API_VERSION,
}
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


class MissingSecretError(DynamoError):
    """A Secret the graph's pods mount is not in its namespace (or lacks a key): the graph
    waits, failed, and is retried until someone creates it."""


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def apply_object(api: KubeClient, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply `obj` as the operator's field manager, forcing conflicts: the fields
    the operator sets are its own (a hand edit of them is undone), the others are left to
    whoever set them. An object an older operator made is adopted first; returns the live
    object."""
    live = await api.apply(obj, force=True)
    if made_by_client_side_apply(live):
        meta = obj["metadata"]
        patch = adoption_patch(live, api.field_manager)
        await api.patch(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"), patch)
        live = await api.apply(obj, force=True)
    return live


def _owned_by(obj: Mapping[str, Any], graph: GraphRef) -> bool:
    owners = obj.get("metadata", {}).get("ownerReferences") or []
    return any(o.get("uid") == graph.uid and o.get("kind") == DGD_KIND for o in owners)


def prunable_kinds(config: OperatorConfig) -> tuple[tuple[str, str], ...]:
    """The kinds `prune` lists: LeaderWorkerSets only where LWS is installed, PodCliqueSets
    only where Grove is."""
    kinds = [k for k in PRUNABLE_KINDS if config.lws_enabled or k[1] != "LeaderWorkerSet"]
    if config.grove_enabled:
        kinds.append((GROVE_API_VERSION, "PodCliqueSet"))
    return tuple(kinds)


async def prune(
    api: KubeClient,
    manifests: GraphManifests,
    kinds: tuple[tuple[str, str], ...] = PRUNABLE_KINDS,
) -> list[str]:
    """Delete this graph's objects of `kinds` that its manifests no longer contain (e.g. a
    removed service); returns `Kind/name` of each deleted object."""
    graph = manifests.graph
    wanted = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects}
    deleted = []
    for api_version, kind in kinds:
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
    await check_mpi_secret(api, manifests, config)
    workload_of = {(w.kind, w.name): w.service for w in manifests.workloads}
    live: dict[str, Mapping[str, Any] | None] = {}
    for obj in manifests.objects:
        result = await apply_object(api, obj)
        service = workload_of.get((obj["kind"], obj["metadata"]["name"]))
        if service is not None:
            live[service] = result
    if manifests.grove:
        live.update(await _scale_grove_children(api, manifests))
    await prune(api, manifests, prunable_kinds(config))
    return _status(body, manifests, live)


async def check_mpi_secret(
    api: KubeClient, manifests: GraphManifests, config: OperatorConfig
) -> None:
    """A multi-node TensorRT-LLM graph needs the SSH key Secret in its namespace before any pod
    is made: without it the pods would wait on a volume that never comes."""
    if not any(needs_mpi(svc) for svc in manifests.services):
        return
    name, ns = config.mpi_run_secret_name, manifests.graph.namespace
    secret = await api.get("v1", "Secret", name, ns)
    if secret is None:
        raise MissingSecretError(
            f"Secret {name!r} (the MPI SSH key pair that multi-node TensorRT-LLM needs) is "
            f"not in namespace {ns!r}: create it with keys {' and '.join(PRIVATE_KEYS)} "
            "(docs/multinode.md); the graph is retried until it exists"
        )
    missing = [k for k in PRIVATE_KEYS if k not in (secret.get("data") or {})]
    if missing:
        raise MissingSecretError(
            f"Secret {name!r} in namespace {ns!r} lacks {' and '.join(missing)}: recreate it "
            "from an SSH key pair (docs/multinode.md); the graph is retried until it has them"
        )


async def _scale_grove_children(
    api: KubeClient, manifests: GraphManifests
) -> dict[str, Mapping[str, Any] | None]:
    """Give Grove's children (PodClique / PodCliqueScalingGroup `{dgd}-0-{svc}`) the DGD's
    replicas: Grove owns them once they exist. A child Grove has not made yet is skipped (it
    starts with the PodCliqueSet's numbers); returns the children as they are now."""
    ns = manifests.graph.namespace
    live: dict[str, Mapping[str, Any] | None] = {}
    for w in manifests.workloads:
        api_version = WORKLOAD_API_VERSIONS[w.kind]
        child = await api.get(api_version, w.kind, w.name, ns)
        stale = child is not None and (child.get("spec") or {}).get("replicas") != w.replicas
        if stale and w.replicas is not None:
            child = await api.patch(api_version, w.kind, w.name, ns, scale_patch(w))
        live[w.service] = child
    return live


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
