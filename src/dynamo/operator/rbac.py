"""Per-graph RBAC: the ServiceAccount, Role and RoleBinding that let graph pods use
Kubernetes discovery, and (when the graph has a planner) let the planner scale the graph."""

from __future__ import annotations

from typing import Any

from dynamo.operator import labels as lbl

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
# pydynamo's runtime keeps each process's keys in a ConfigMap named after its pod and counts
# them only while the pod is Ready in the graph's discovery Service's EndpointSlices (it deletes
# the stale ConfigMaps of heartbeat writers outside pods); DynamoWorkerMetadata is what NVIDIA
# Dynamo's runtime uses.
DISCOVERY_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["nvidia.com"],
        "resources": ["dynamoworkermetadatas"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
)
# What the planner's kubernetes connector does: read its own DGD (spec and status) and merge
# patch `spec.services.<svc>.replicas` (dynamo.planner.connectors.kubernetes); nothing more.
PLANNER_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": ["nvidia.com"],
        "resources": ["dynamographdeployments"],
        "verbs": ["get", "patch"],
    },
)


def discovery_account_name(graph: lbl.GraphRef) -> str:
    return f"{graph.name}-k8s-service-discovery"


def planner_account_name(graph: lbl.GraphRef) -> str:
    return f"{graph.name}-planner"


def _account(
    graph: lbl.GraphRef, name: str, role: str, rules: tuple[dict[str, Any], ...]
) -> list[dict[str, Any]]:
    labels = lbl.graph_labels(graph, "rbac")
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": lbl.metadata(graph, name, labels),
        },
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": lbl.metadata(graph, role, labels),
            "rules": [dict(rule) for rule in rules],
        },
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "RoleBinding",
            "metadata": lbl.metadata(graph, f"{name}-binding", labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": graph.namespace}],
        },
    ]


def discovery_rbac(graph: lbl.GraphRef) -> list[dict[str, Any]]:
    """`{dgd}-k8s-service-discovery` ServiceAccount, `-role` Role and `-binding` RoleBinding."""
    name = discovery_account_name(graph)
    return _account(graph, name, f"{name}-role", DISCOVERY_RULES)


def planner_rbac(graph: lbl.GraphRef, *, with_discovery: bool) -> list[dict[str, Any]]:
    """`{dgd}-planner`: may get and patch its own DynamoGraphDeployment (to scale services)."""
    name = planner_account_name(graph)
    own_graph = tuple({**rule, "resourceNames": [graph.name]} for rule in PLANNER_RULES)
    rules = own_graph + (DISCOVERY_RULES if with_discovery else ())
    return _account(graph, name, f"{name}-role", rules)
