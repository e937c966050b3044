"""Every Kubernetes object of one DynamoGraphDeployment, as a pure function of the DGD body
and the operator config. The process-level parts (command, env, ports, resources) come from
the shared graph builder that `dynamo serve` also uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynamo.deploy.builder import DISCOVERY_ANNOTATION, ServiceSpec, build_graph
from dynamo.deploy.graph import DynamoGraphDeployment, load_graph
from dynamo.deploy.multinode import check_multinode
from dynamo.operator import grove, mpi, rbac, workloads
from dynamo.operator.config import DISCOVERY_BACKENDS, OperatorConfig
from dynamo.operator.labels import GraphRef, is_dns_label, is_label_value
from dynamo.operator.podspec import PodOptions
from dynamo.operator.status import Workload
from dynamo.runtime.errors import ConfigError

# Server-set metadata that the graph model need not see.
_SERVER_META = ("managedFields", "resourceVersion", "creationTimestamp", "selfLink")


@dataclass(frozen=True)
class GraphManifests:
    """The desired objects of one graph and, per service, the workload that carries it."""

    graph: GraphRef
    dgd: DynamoGraphDeployment
    services: tuple[ServiceSpec, ...]
    objects: tuple[dict[str, Any], ...]
    workloads: tuple[Workload, ...]
    discovery_backend: str
    grove: bool = False  # one PodCliqueSet; the workloads are Grove's children


def parse_graph(body: Mapping[str, Any]) -> DynamoGraphDeployment:
    """The DGD model of a live object (status and server fields ignored); a `ConfigError`
    names the offending field, e.g. `spec.services.Frontend.replicas: ...`."""
    doc = {k: v for k, v in body.items() if k != "status"}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_META}
    doc["metadata"] = meta
    return load_graph(doc)


def discovery_backend(dgd: DynamoGraphDeployment, config: OperatorConfig) -> str:
    chosen = dgd.metadata.annotations.get(DISCOVERY_ANNOTATION) or config.discovery_backend
    if chosen not in DISCOVERY_BACKENDS:
        raise ConfigError(
            f"metadata.annotations[{DISCOVERY_ANNOTATION}]: {chosen!r} is not one of "
            f"{list(DISCOVERY_BACKENDS)}"
        )
    return chosen


def _check_names(graph: GraphRef, services: list[ServiceSpec], discovery: str) -> None:
    if discovery == "kubernetes":
        name = workloads.discovery_service_name(graph)
        if not is_dns_label(name):
            raise ConfigError(
                f"metadata.name: the discovery Service name {name!r} (graph name + "
                "'-dynamo-discovery') must be a DNS label of at most 63 characters"
            )
        for svc in services:
            if svc.k8s_name == name:
                raise ConfigError(
                    f"spec.services.{svc.name}: its object name {name!r} is the graph's "
                    "discovery Service; rename the service"
                )
    for svc in services:
        if not is_dns_label(svc.k8s_name):
            raise ConfigError(
                f"spec.services.{svc.name}: object name {svc.k8s_name!r} (graph name + '-' + "
                "service name, lowercased) must be a DNS label: at most 63 characters of a-z, "
                "0-9 and '-', starting with a letter"
            )
        for key, value in svc.labels.items():
            if not is_label_value(value):
                raise ConfigError(
                    f"spec.services.{svc.name}: label {key}={value!r} is not a valid label "
                    "value (at most 63 characters of A-Z, a-z, 0-9, '-', '_', '.')"
                )


NO_ORCHESTRATOR = "no multinode orchestrator available"


def _check_multinode(
    services: list[ServiceSpec], config: OperatorConfig, *, on_grove: bool
) -> None:
    """A multinode service needs Grove or LeaderWorkerSet on the cluster (as NVIDIA Dynamo, the
    graph fails without one) and a backend whose ranks this project runs."""
    for svc in services:
        if svc.node_count < 2:
            continue
        if not (on_grove or config.lws_enabled):
            raise ConfigError(
                f"spec.services.{svc.name}.multinode: {NO_ORCHESTRATOR}: install "
                "LeaderWorkerSet or Grove and set dynamo-operator.orchestrators.lws.enabled or "
                ".grove.enabled (DYN_OPERATOR_LWS_ENABLED, DYN_OPERATOR_GROVE_ENABLED)"
            )
        check_multinode(svc)
        if mpi.needs_mpi(svc):
            mpi.mpi_secret(svc, config)


def needs_service(svc: ServiceSpec, discovery: str) -> bool:
    """Frontends always get a Service (port 8000); other components too with Kubernetes
    discovery, as NVIDIA Dynamo does (pydynamo's discovery itself watches the graph's discovery
    Service, `workloads.discovery_service`)."""
    if not svc.ports:
        return False
    return svc.is_frontend or discovery == "kubernetes"


def build_manifests(body: Mapping[str, Any], config: OperatorConfig) -> GraphManifests:
    """All objects for the DGD `body`, in creation order (PVCs, RBAC, workloads, Services, and
    with Kubernetes discovery the graph's discovery Service)."""
    dgd = parse_graph(body)
    graph = GraphRef.from_body(body)
    discovery = discovery_backend(dgd, config)
    services = build_graph(
        dgd,
        k8s_namespace=graph.namespace,
        mode="kubernetes",
        discovery_backend=discovery,
        infrastructure=config.infrastructure_env,
    )
    _check_names(graph, services, discovery)
    on_grove = grove.wants_grove(dgd, config.grove_enabled)
    _check_multinode(services, config, on_grove=on_grove)
    if on_grove:
        grove.check_grove_names(graph, services)
    objects: list[dict[str, Any]] = [
        workloads.persistent_volume_claim(graph, pvc) for pvc in dgd.spec.pvcs if pvc.create
    ]
    if discovery == "kubernetes":
        objects += rbac.discovery_rbac(graph)
    has_planner = any(s.component_type == "planner" for s in services)
    if has_planner:
        objects += rbac.planner_rbac(graph, with_discovery=discovery == "kubernetes")
    expected: list[Workload] = []
    pod_options = [(svc, _pod_options(graph, svc, discovery, config)) for svc in services]
    if on_grove:
        pcs, expected = grove.pod_clique_set(
            graph, dgd, pod_options, config.grove_termination_delay
        )
        objects.append(pcs)
    for svc, options in pod_options:
        if not on_grove:
            obj, workload = _workload(graph, dgd, svc, options)
            objects.append(obj)
            expected.append(workload)
        if needs_service(svc, discovery):
            objects.append(workloads.service(graph, svc, discovery_backend=discovery))
    if discovery == "kubernetes":
        objects.append(workloads.discovery_service(graph))
    return GraphManifests(
        graph=graph,
        dgd=dgd,
        services=tuple(services),
        objects=tuple(objects),
        workloads=tuple(expected),
        discovery_backend=discovery,
        grove=on_grove,
    )


def _workload(
    graph: GraphRef, dgd: DynamoGraphDeployment, svc: ServiceSpec, options: PodOptions
) -> tuple[dict[str, Any], Workload]:
    """A single-node service's Deployment, a multinode one's LeaderWorkerSet."""
    replicas = workloads.pinned_replicas(svc)
    if svc.node_count > 1:
        lws = workloads.leader_worker_set(graph, dgd, svc, options)
        return lws, Workload(svc.name, "LeaderWorkerSet", svc.k8s_name, replicas)
    deployment = workloads.deployment(graph, dgd, svc, options)
    return deployment, Workload(svc.name, "Deployment", svc.k8s_name, replicas)


def _pod_options(
    graph: GraphRef, svc: ServiceSpec, discovery: str, config: OperatorConfig
) -> PodOptions:
    account = None
    if svc.component_type == "planner":
        account = rbac.planner_account_name(graph)
    elif discovery == "kubernetes":
        account = rbac.discovery_account_name(graph)
    secret = mpi.mpi_secret(svc, config) if mpi.needs_mpi(svc) else None
    return PodOptions(
        default_image=config.default_image, service_account=account, mpi_secret=secret
    )
