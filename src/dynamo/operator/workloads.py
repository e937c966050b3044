"""Workload objects of one graph service: a Deployment (or a LeaderWorkerSet when the service
spans several nodes), its Service, and the graph's PersistentVolumeClaims and discovery
Service."""

from __future__ import annotations

import dataclasses
from typing import Any

from dynamo.deploy.builder import ServiceSpec
from dynamo.deploy.graph import DynamoGraphDeployment, Pvc
from dynamo.deploy.multinode import pod_spec
from dynamo.operator import labels as lbl
from dynamo.operator.mpi import with_ssh
from dynamo.operator.podspec import PodOptions, pod_template
from dynamo.runtime.discovery.kubernetes.objects import DISCOVERY_SERVICE_LABEL

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
STRATEGY_ANNOTATION = "nvidia.com/deployment-strategy"
MAX_SURGE_ANNOTATION = "nvidia.com/deployment-rolling-update-max-surge"
MAX_UNAVAILABLE_ANNOTATION = "nvidia.com/deployment-rolling-update-max-unavailable"


def _strategy(annotations: dict[str, str]) -> dict[str, Any]:
    """Deployment update strategy; the `nvidia.com/deployment-strategy` annotation picks one."""
    kind = annotations.get(STRATEGY_ANNOTATION, "RollingUpdate")
    if kind == "Recreate":
        return {"type": "Recreate"}
    surge, unavailable = "25%", "25%"
    if kind == "RampedSlowRollout":
        surge, unavailable = "1", "0"
    elif kind == "BestEffortControlledRollout":
        surge, unavailable = "0", "20%"
    surge = annotations.get(MAX_SURGE_ANNOTATION, surge)
    unavailable = annotations.get(MAX_UNAVAILABLE_ANNOTATION, unavailable)
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {
            "maxSurge": _int_or_str(surge),
            "maxUnavailable": _int_or_str(unavailable),
        },
    }


def _int_or_str(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def pinned_replicas(svc: ServiceSpec) -> int | None:
    """The replicas the DGD sets for `svc`, or None: then the operator leaves the workload's
    `replicas` to whoever scales it (`kubectl scale`, an HPA); the API server defaults it to 1."""
    return svc.replicas if svc.spec.replicas is not None else None


def _replicas(svc: ServiceSpec) -> dict[str, int]:
    replicas = pinned_replicas(svc)
    return {} if replicas is None else {"replicas": replicas}


def deployment(
    graph: lbl.GraphRef, dgd: DynamoGraphDeployment, svc: ServiceSpec, options: PodOptions
) -> dict[str, Any]:
    """The Deployment of a single-node service, named `{dgd}-{service lowercased}`."""
    labels = lbl.service_labels(graph, svc)
    pod_labels = {**labels, **lbl.selector(svc)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": lbl.metadata(graph, svc.k8s_name, labels, svc.spec.annotations),
        "spec": {
            **_replicas(svc),
            "selector": {"matchLabels": lbl.selector(svc)},
            "strategy": _strategy({**dgd.metadata.annotations, **svc.spec.annotations}),
            "template": pod_template(svc, dgd, pod_labels, options),
        },
    }


def leader_worker_set(
    graph: lbl.GraphRef, dgd: DynamoGraphDeployment, svc: ServiceSpec, options: PodOptions
) -> dict[str, Any]:
    """A LeaderWorkerSet for a service with `multinode.nodeCount` > 1: each replica is a group
    of `nodeCount` pods, one engine; only the leader serves (and is probed), the others are
    its ranks (`dynamo.deploy.multinode` gives each pod its flags). Resources are per pod."""
    labels = lbl.service_labels(graph, svc)
    pod_labels = {**labels, **lbl.selector(svc)}
    leader_svc = pod_spec(svc, "lws", "leader")
    leader = pod_template(leader_svc, dgd, {**pod_labels, lbl.ROLE_LABEL: "leader"}, options)
    worker_options = dataclasses.replace(options, probes=False)
    worker_labels = {**pod_labels, lbl.ROLE_LABEL: "worker"}
    worker = pod_template(pod_spec(svc, "lws", "worker"), dgd, worker_labels, worker_options)
    if options.mpi_secret:
        leader = with_ssh(leader, options.mpi_secret, "leader")
        worker = with_ssh(worker, options.mpi_secret, "worker")
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": lbl.metadata(graph, svc.k8s_name, labels, svc.spec.annotations),
        "spec": {
            **_replicas(svc),
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": svc.node_count,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": leader,
                "workerTemplate": worker,
            },
        },
    }


def service(graph: lbl.GraphRef, svc: ServiceSpec, *, discovery_backend: str) -> dict[str, Any]:
    """The Service of a component, on its ports (frontend 8000 `http`, worker 9090 `system`).

    With Kubernetes discovery its EndpointSlices are how peers find the pods, hence the
    discovery labels."""
    labels = lbl.service_labels(graph, svc)
    if discovery_backend == "kubernetes":
        labels[lbl.DISCOVERY_BACKEND_LABEL] = "kubernetes"
        labels[lbl.DISCOVERY_ENABLED_LABEL] = "true"
    pod_selector = lbl.selector(svc)
    if svc.node_count > 1:
        pod_selector = {**pod_selector, lbl.ROLE_LABEL: "leader"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": lbl.metadata(graph, svc.k8s_name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_selector,
            "ports": [
                {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                for name, port in svc.ports.items()
            ],
        },
    }


def discovery_service_name(graph: lbl.GraphRef) -> str:
    return f"{graph.name}-dynamo-discovery"


def discovery_service(graph: lbl.GraphRef) -> dict[str, Any]:
    """The graph's headless Service `{dgd}-dynamo-discovery` over every pod of the graph.

    Nothing connects through it: Kubernetes discovery watches its EndpointSlices (which carry
    its labels, `nvidia.com/dynamo-discovery-service` among them) and counts a process's keys
    only while its pod is Ready there. Not-ready pods stay unpublished, so a pod that fails its
    readiness probe (or restarts its container) drops out of every peer's view."""
    labels = {**lbl.graph_labels(graph, "discovery"), DISCOVERY_SERVICE_LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": lbl.metadata(graph, discovery_service_name(graph), labels),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": {lbl.GRAPH_LABEL: graph.name},
        },
    }


def persistent_volume_claim(graph: lbl.GraphRef, pvc: Pvc) -> dict[str, Any]:
    """A PVC of `spec.pvcs` with `create: true` (validated to carry size, class and mode)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": lbl.metadata(graph, pvc.name, lbl.graph_labels(graph, "storage")),
        "spec": {
            "accessModes": [pvc.volume_access_mode],
            "storageClassName": pvc.storage_class,
            "resources": {"requests": {"storage": pvc.size}},
        },
    }
