"""Names, labels and owner references of the objects the operator creates for a graph."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynamo.deploy.builder import ServiceSpec
from dynamo.deploy.kube import API_VERSION

GRAPH_LABEL = "nvidia.com/dynamo-graph-deployment-name"
COMPONENT_LABEL = "nvidia.com/dynamo-component"
COMPONENT_TYPE_LABEL = "nvidia.com/dynamo-component-type"
SELECTOR_LABEL = "nvidia.com/selector"
DISCOVERY_BACKEND_LABEL = "nvidia.com/dynamo-discovery-backend"
DISCOVERY_ENABLED_LABEL = "nvidia.com/dynamo-discovery-enabled"
ROLE_LABEL = "role"
MANAGED_BY = "dynamo-operator"
# Kept by operators before server-side apply (client-side apply); dropped on adoption.
LAST_APPLIED_ANNOTATION = "nvidia.com/dynamo-last-applied"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class GraphRef:
    """The DynamoGraphDeployment that owns the objects (name, namespace, uid)."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GraphRef:
        meta = body.get("metadata", {})
        return cls(
            name=meta["name"], namespace=meta.get("namespace") or "default", uid=meta.get("uid", "")
        )

    @property
    def owner_reference(self) -> dict[str, Any]:
        """Controller owner reference: the API server garbage-collects children with the DGD."""
        return {
            "apiVersion": API_VERSION,
            "kind": "DynamoGraphDeployment",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def is_dns_label(name: str) -> bool:
    """An RFC 1035 label (Service names): lowercase alphanumerics and '-', at most 63."""
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def graph_labels(graph: GraphRef, component: str) -> dict[str, str]:
    """Labels every object of a graph carries (`component` is app.kubernetes.io/component)."""
    return {
        "app.kubernetes.io/name": "dynamo",
        "app.kubernetes.io/instance": graph.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "dynamo",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        GRAPH_LABEL: graph.name,
    }


def service_labels(graph: GraphRef, svc: ServiceSpec) -> dict[str, str]:
    """Labels of one service's workload, Service and pods (user labels last, they win)."""
    base = graph_labels(graph, svc.component_type or "component")
    return {**base, COMPONENT_TYPE_LABEL: svc.component_type, **svc.labels}


def selector(svc: ServiceSpec) -> dict[str, str]:
    """The label that selects exactly this service's pods."""
    return {SELECTOR_LABEL: svc.k8s_name}


def metadata(
    graph: GraphRef,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Object metadata in the graph's namespace, owned by the graph."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": graph.namespace,
        "labels": dict(labels),
        "ownerReferences": [graph.owner_reference],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
