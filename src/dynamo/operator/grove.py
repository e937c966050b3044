"""The Grove path: a whole graph as one Grove `PodCliqueSet` (`grove.io/v1alpha1`), as NVIDIA
Dynamo does when the platform says Grove is installed.

A single-node service is one clique `{svc}`; a multinode service is a leader clique
`{svc}-ldr` (1 pod) and a worker clique `{svc}-wkr` (nodeCount - 1 pods), grouped by a
`PodCliqueScalingGroup` `{svc}` whose replicas are the service's. Grove creates the children
`{dgd}-0-{svc}` (PodClique or PodCliqueScalingGroup) and owns their replica counts once they
exist, so the operator also sets their `spec.replicas` (`scale_patch`), and reads their
status for the DGD's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dynamo.deploy.builder import ServiceSpec
from dynamo.deploy.graph import DynamoGraphDeployment
from dynamo.deploy.multinode import GROVE_LEADER_SUFFIX, GROVE_WORKER_SUFFIX, Role, pod_spec
from dynamo.operator import labels as lbl
from dynamo.operator.mpi import with_ssh
from dynamo.operator.podspec import PodOptions, pod_template
from dynamo.operator.status import Workload
from dynamo.runtime.errors import ConfigError

GROVE_API_VERSION = "grove.io/v1alpha1"
ENABLE_GROVE_ANNOTATION = "nvidia.com/enable-grove"
# Grove's webhook: PodCliqueSet name + scaling group name + clique name, at most 45 characters.
GROVE_NAME_LIMIT = 45
ANY_ORDER = "CliqueStartupTypeAnyOrder"
EXPLICIT_ORDER = "CliqueStartupTypeExplicit"


def wants_grove(dgd: DynamoGraphDeployment, grove_enabled: bool) -> bool:
    """Grove is on in the operator config and the DGD does not opt out."""
    opt_out = dgd.metadata.annotations.get(ENABLE_GROVE_ANNOTATION, "").lower() == "false"
    return grove_enabled and not opt_out


def check_grove_names(graph: lbl.GraphRef, services: list[ServiceSpec]) -> None:
    """Grove's name-length limit, counted as Dynamo's webhook counts it."""
    for svc in services:
        name = svc.name.lower()
        used = len(graph.name) + len(name)
        if svc.node_count > 1:
            used += len(f"{name}-{GROVE_LEADER_SUFFIX}")
        if used > GROVE_NAME_LIMIT:
            raise ConfigError(
                f"spec.services.{svc.name}: its Grove names (graph, service and, when "
                f"multinode, leader clique) take {used} characters; Grove allows "
                f"{GROVE_NAME_LIMIT}: shorten the graph or service name"
            )


def _clique(
    name: str,
    template: Mapping[str, Any],
    replicas: int,
    min_available: int,
) -> dict[str, Any]:
    meta = template["metadata"]
    clique: dict[str, Any] = {
        "name": name,
        "labels": dict(meta["labels"]),
        "spec": {
            "roleName": name,
            "replicas": replicas,
            "minAvailable": min_available,
            "podSpec": template["spec"],
        },
    }
    if meta.get("annotations"):
        clique["annotations"] = dict(meta["annotations"])
    return clique


def _role_template(
    svc: ServiceSpec,
    dgd: DynamoGraphDeployment,
    labels: Mapping[str, str],
    options: PodOptions,
    role: Role,
) -> dict[str, Any]:
    role_options = dataclasses.replace(options, probes=options.probes and role == "leader")
    template = pod_template(
        pod_spec(svc, "grove", role), dgd, {**labels, lbl.ROLE_LABEL: role}, role_options
    )
    return with_ssh(template, options.mpi_secret, role) if options.mpi_secret else template


def pod_clique_set(
    graph: lbl.GraphRef,
    dgd: DynamoGraphDeployment,
    services: list[tuple[ServiceSpec, PodOptions]],
    termination_delay: str,
) -> tuple[dict[str, Any], list[Workload]]:
    """The graph's PodCliqueSet `{dgd}` and, per service, the Grove child that reports it."""
    cliques: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    workloads: list[Workload] = []
    startup = ANY_ORDER
    for svc, options in services:
        name = svc.name.lower()
        pod_labels = {**lbl.service_labels(graph, svc), **lbl.selector(svc)}
        child = f"{graph.name}-0-{name}"
        if svc.node_count < 2:
            pod = pod_template(svc, dgd, pod_labels, options)
            cliques.append(_clique(name, pod, svc.replicas, 1))
            workloads.append(Workload(svc.name, "PodClique", child, svc.replicas))
            continue
        leader, worker = f"{name}-{GROVE_LEADER_SUFFIX}", f"{name}-{GROVE_WORKER_SUFFIX}"
        workers = svc.node_count - 1
        leader_tpl = _role_template(svc, dgd, pod_labels, options, "leader")
        worker_tpl = _role_template(svc, dgd, pod_labels, options, "worker")
        # minAvailable = the clique's replicas: a group missing a rank cannot serve (#7811).
        leader_clique = _clique(leader, leader_tpl, 1, 1)
        if options.mpi_secret:
            # mpirun needs every worker's sshd: the leader starts once the workers are ready.
            leader_clique["spec"]["startsAfter"] = [worker]
            startup = EXPLICIT_ORDER
        cliques.append(leader_clique)
        cliques.append(_clique(worker, worker_tpl, workers, workers))
        groups.append(
            {
                "name": name,
                "cliqueNames": [leader, worker],
                "replicas": svc.replicas,
                "minAvailable": 1,
            }
        )
        workloads.append(Workload(svc.name, "PodCliqueScalingGroup", child, svc.replicas))
    template: dict[str, Any] = {
        "cliques": cliques,
        "cliqueStartupType": startup,
        "headlessServiceConfig": {"publishNotReadyAddresses": True},
        "terminationDelay": termination_delay,
    }
    if groups:
        template["podCliqueScalingGroups"] = groups
    pcs = {
        "apiVersion": GROVE_API_VERSION,
        "kind": "PodCliqueSet",
        "metadata": lbl.metadata(graph, graph.name, lbl.graph_labels(graph, "graph")),
        "spec": {"replicas": 1, "template": template},
    }
    return pcs, workloads


def scale_patch(workload: Workload) -> dict[str, Any]:
    """The merge patch that gives a Grove child its replicas (Grove owns them once created)."""
    return {"spec": {"replicas": workload.replicas}}
