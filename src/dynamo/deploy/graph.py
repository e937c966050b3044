"""DynamoGraphDeployment (DGD) and DynamoComponentDeployment (DCD) models, nvidia.com/v1alpha1.

One source of truth for `dynamo serve`, the operator and the CRD schemas. Field names and
rules follow Dynamo's v1alpha1 API (services map, shared component spec, status).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic.alias_generators import to_snake

from dynamo.deploy.kube import (
    Condition,
    CrdModel,
    CustomResource,
    EnvVar,
    ExtraPodMetadata,
    ExtraPodSpec,
    Quantity,
)
from dynamo.runtime.errors import ConfigError

API_GROUP = "nvidia.com"
MAX_SERVICES = 25
MAX_PVCS = 100

ComponentType = Literal["frontend", "worker", "planner", "prefill", "decode", "epp", "main"]
"""`main` is the early name of the frontend; `prefill`/`decode` are newer worker types."""
BackendFramework = Literal["vllm", "sglang", "trtllm"]
WORKER_COMPONENT_TYPES = frozenset({"worker", "prefill", "decode"})
FRONTEND_COMPONENT_TYPES = frozenset({"frontend", "main"})


class ResourceItem(CrdModel):
    """Requests or limits of one component (per node when multinode)."""

    cpu: Quantity | None = Field(default=None, description="CPU quantity, e.g. 500m.")
    memory: Quantity | None = Field(default=None, description="Memory quantity, e.g. 8Gi.")
    gpu: Quantity | None = Field(default=None, description="Number of GPUs.")
    gpu_type: str | None = Field(
        default=None, description="Extended resource name for gpu (default nvidia.com/gpu)."
    )
    custom: dict[str, str] = Field(
        default_factory=dict, description="Other resources by name, e.g. ephemeral-storage."
    )


class ResourceClaim(CrdModel):
    """A DRA resource claim of the main container."""

    name: str = Field(description="Name of a pod resource claim.")
    request: str | None = Field(default=None, description="Request within the claim.")


class Resources(CrdModel):
    """Requests, limits and DRA claims of the main container."""

    requests: ResourceItem | None = Field(default=None, description="Resource requests.")
    limits: ResourceItem | None = Field(default=None, description="Resource limits.")
    claims: list[ResourceClaim] = Field(default_factory=list, description="DRA claims.")


class VolumeMount(CrdModel):
    """Mounts a graph-level PVC (`spec.pvcs[].name`) into the component."""

    name: str = Field(min_length=1, description="Name of an entry of spec.pvcs.")
    mount_point: str | None = Field(
        default=None, description="Path in the container; required unless useAsCompilationCache."
    )
    use_as_compilation_cache: bool = Field(
        default=False, description="Mount at the backend's compilation cache path."
    )


class SharedMemory(CrdModel):
    """The memory-backed /dev/shm volume (default 8Gi)."""

    disabled: bool = Field(default=False, description="Do not mount /dev/shm.")
    size: Quantity | None = Field(default=None, description="Size; required unless disabled.")


class Multinode(CrdModel):
    """Spread one replica over several nodes."""

    node_count: int = Field(default=2, ge=2, description="Nodes per replica (at least 2).")


class IngressTLS(CrdModel):
    secret_name: str | None = Field(default=None, description="Secret holding cert and key.")


class Ingress(CrdModel):
    """Expose the component through an Ingress or an Istio VirtualService."""

    enabled: bool = Field(default=False, description="Create the ingress.")
    host: str | None = Field(default=None, description="Base host name; required when enabled.")
    use_virtual_service: bool = Field(default=False, description="Use a VirtualService.")
    virtual_service_gateway: str | None = Field(default=None, description="Gateway name.")
    host_prefix: str | None = Field(default=None, description="Prefix before the host.")
    host_suffix: str | None = Field(default=None, description="Suffix after the host.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Ingress annotations.")
    labels: dict[str, str] = Field(default_factory=dict, description="Ingress labels.")
    tls: IngressTLS | None = Field(default=None, description="TLS settings.")
    ingress_controller_class_name: str | None = Field(
        default=None, description="Ingress class, e.g. nginx."
    )


class ModelRef(CrdModel):
    """The model a component serves (creates a headless Service for endpoint discovery)."""

    name: str = Field(min_length=1, description="Base model identifier.")
    revision: str | None = Field(default=None, description="Model revision.")


class ScalingAdapter(CrdModel):
    """Whether a DynamoGraphDeploymentScalingAdapter owns this service's replicas."""

    enabled: bool | None = Field(default=None, description="Opt in to the adapter (current API).")
    disable: bool | None = Field(default=None, description="Opt out of the adapter (older API).")


class ServicePvc(CrdModel):
    """Early-API per-service PVC (deprecated: use spec.pvcs + volumeMounts)."""

    name: str | None = Field(default=None, description="PVC name.")
    create: bool | None = Field(default=None, description="Create the PVC.")
    storage_class: str | None = Field(default=None, description="Storage class.")
    size: Quantity | None = Field(default=None, description="Requested size.")
    volume_access_mode: str | None = Field(default=None, description="Access mode.")
    mount_point: str | None = Field(default=None, description="Mount path.")


class ComponentSpec(CrdModel):
    """One service of a graph (`DynamoComponentDeploymentSharedSpec`); also the DCD spec body."""

    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations for generated resources."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels for generated resources."
    )
    service_name: str | None = Field(
        default=None, description="Set by the operator to the services map key."
    )
    component_type: ComponentType | None = Field(
        default=None, description="Role: frontend, worker, planner, prefill, decode, epp (main)."
    )
    sub_component_type: str | None = Field(
        default=None, description="Sub-role, e.g. prefill or decode."
    )
    dynamo_namespace: str | None = Field(
        default=None,
        description="Deprecated and ignored: the namespace is {k8s-namespace}-{graph name}.",
    )
    global_dynamo_namespace: bool = Field(
        default=False, description="Place the component in the global Dynamo namespace (dynamo)."
    )
    replicas: int | None = Field(default=None, ge=0, description="Desired replicas (default 1).")
    resources: Resources | None = Field(default=None, description="CPU, memory and GPU.")
    autoscaling: dict[str, Any] | None = Field(
        default=None, description="Deprecated and ignored (use the planner or a scaling adapter)."
    )
    envs: list[EnvVar] = Field(default_factory=list, description="Environment variables.")
    env_from_secret: str | None = Field(
        default=None, description="Secret whose keys become environment variables."
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, description="Mounts of graph-level PVCs."
    )
    pvc: ServicePvc | None = Field(default=None, description="Deprecated per-service PVC.")
    ingress: Ingress | None = Field(default=None, description="External exposure.")
    model_ref: ModelRef | None = Field(default=None, description="Model served.")
    shared_memory: SharedMemory | None = Field(default=None, description="/dev/shm settings.")
    extra_pod_metadata: ExtraPodMetadata | None = Field(
        default=None, description="Labels/annotations added to pods."
    )
    extra_pod_spec: ExtraPodSpec | None = Field(
        default=None, description="PodSpec overrides plus mainContainer."
    )
    liveness_probe: dict[str, Any] | None = Field(
        default=None, description="Replaces the default liveness probe (corev1.Probe)."
    )
    readiness_probe: dict[str, Any] | None = Field(
        default=None, description="Replaces the default readiness probe (corev1.Probe)."
    )
    multinode: Multinode | None = Field(default=None, description="Multi-node replicas.")
    scaling_adapter: ScalingAdapter | None = Field(default=None, description="Scaling adapter.")
    epp_config: dict[str, Any] | None = Field(default=None, description="EPP (GAIE) settings.")
    frontend_sidecar: dict[str, Any] | None = Field(
        default=None, description="Frontend sidecar settings."
    )
    checkpoint: dict[str, Any] | None = Field(default=None, description="Checkpoint settings.")

    @model_validator(mode="after")
    def _check_rules(self) -> ComponentSpec:
        for i, mount in enumerate(self.volume_mounts):
            if mount.mount_point is None and not mount.use_as_compilation_cache:
                raise ValueError(
                    f"volumeMounts[{i}].mountPoint is required unless useAsCompilationCache"
                )
        if self.ingress and self.ingress.enabled and not self.ingress.host:
            raise ValueError("ingress.host is required when ingress.enabled")
        if self.shared_memory and not self.shared_memory.disabled and not self.shared_memory.size:
            raise ValueError("sharedMemory.size is required unless sharedMemory.disabled")
        return self

    @property
    def replica_count(self) -> int:
        """Replicas with the CRD default (1) applied."""
        return 1 if self.replicas is None else self.replicas


class Pvc(CrdModel):
    """A graph-level PersistentVolumeClaim, referenced by services' volumeMounts."""

    name: str = Field(min_length=1, description="PVC name.")
    create: bool | None = Field(default=None, description="Create the PVC when missing.")
    storage_class: str | None = Field(default=None, description="Storage class (with create).")
    size: Quantity | None = Field(default=None, description="Size (with create).")
    volume_access_mode: str | None = Field(
        default=None, description="Access mode, e.g. ReadWriteMany (with create)."
    )

    @model_validator(mode="after")
    def _check_create(self) -> Pvc:
        if self.create and not (self.size and self.storage_class and self.volume_access_mode):
            raise ValueError("size, storageClass and volumeAccessMode are required when create")
        return self


class RestartStrategy(CrdModel):
    type: Literal["Sequential", "Parallel"] = Field(
        default="Sequential", description="Restart services one at a time or all at once."
    )
    order: list[str] = Field(default_factory=list, description="Service order (Sequential).")


class Restart(CrdModel):
    """Changing `id` restarts the whole graph."""

    id: str = Field(min_length=1, description="Restart generation id.")
    strategy: RestartStrategy | None = Field(default=None, description="How to restart.")


class GraphSpec(CrdModel):
    """`DynamoGraphDeployment.spec`."""

    services: dict[str, ComponentSpec] = Field(
        min_length=1,
        max_length=MAX_SERVICES,
        description="Services by name; the name appears in object names and labels.",
    )
    pvcs: list[Pvc] = Field(
        default_factory=list, max_length=MAX_PVCS, description="PVCs services can mount."
    )
    envs: list[EnvVar] = Field(
        default_factory=list, description="Env vars for every service (a service's own win)."
    )
    backend_framework: BackendFramework | None = Field(
        default=None, description="Default backend: vllm, sglang or trtllm (immutable)."
    )
    restart: Restart | None = Field(default=None, description="Graph-wide restart request.")

    @model_validator(mode="after")
    def _check_mounts(self) -> GraphSpec:
        known = {p.name for p in self.pvcs}
        for service, spec in self.services.items():
            for i, mount in enumerate(spec.volume_mounts):
                if mount.name not in known:
                    raise ValueError(
                        f"services.{service}.volumeMounts[{i}].name {mount.name!r} "
                        "is not in spec.pvcs"
                    )
        return self


class ServiceReplicaStatus(CrdModel):
    """Replica counts of one service's workload."""

    component_kind: str | None = Field(
        default=None, description="Deployment, LeaderWorkerSet, PodClique or PodCliqueScalingGroup."
    )
    component_name: str | None = Field(default=None, description="Workload object name.")
    component_names: list[str] = Field(
        default_factory=list, description="Workload names during a rolling update."
    )
    replicas: int = Field(default=0, description="Total replicas.")
    updated_replicas: int = Field(default=0, description="Replicas on the current spec.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas.")
    available_replicas: int | None = Field(default=None, description="Available replicas.")


class GraphStatus(CrdModel):
    """`DynamoGraphDeployment.status`."""

    state: Literal["initializing", "pending", "successful", "failed"] | None = Field(
        default=None, description="Summary state."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready condition.")
    services: dict[str, ServiceReplicaStatus] = Field(
        default_factory=dict, description="Per-service replica status."
    )
    observed_generation: int | None = Field(default=None, description="Last reconciled generation.")
    restart: dict[str, Any] | None = Field(default=None, description="Restart progress.")
    rolling_update: dict[str, Any] | None = Field(default=None, description="Rolling update.")
    checkpoints: dict[str, Any] | None = Field(default=None, description="Checkpoint status.")


class DynamoGraphDeployment(CustomResource[GraphSpec, GraphStatus]):
    """A whole inference graph: frontend, workers, planner... (`dgd`)."""

    kind: Literal["DynamoGraphDeployment"] = Field(
        default="DynamoGraphDeployment", description="DynamoGraphDeployment."
    )


class ComponentDeploymentSpec(ComponentSpec):
    """`DynamoComponentDeployment.spec`: the shared component spec plus the backend."""

    backend_framework: BackendFramework | None = Field(
        default=None, description="Backend: vllm, sglang or trtllm."
    )


class ComponentDeploymentStatus(CrdModel):
    """`DynamoComponentDeployment.status`."""

    conditions: list[Condition] = Field(
        default_factory=list, description="Available, DynamoComponentReady, Valid."
    )
    observed_generation: int | None = Field(default=None, description="Last reconciled generation.")
    service: ServiceReplicaStatus | None = Field(default=None, description="Replica status.")
    pod_selector: dict[str, str] = Field(default_factory=dict, description="Labels of the pods.")


class DynamoComponentDeployment(CustomResource[ComponentDeploymentSpec, ComponentDeploymentStatus]):
    """One component of a graph, generated by the operator from a DGD (`dcd`)."""

    kind: Literal["DynamoComponentDeployment"] = Field(
        default="DynamoComponentDeployment", description="DynamoComponentDeployment."
    )


def error_path(loc: tuple[int | str, ...]) -> str:
    """`('spec', 'envs', 0, 'name')` -> `spec.envs[0].name`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the field path."""
    lines = []
    for err in exc.errors(include_url=False):
        path = error_path(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {msg}" if path else msg)
    return "\n".join(lines)


def read_manifest(source: str | Path | Mapping[str, Any], *, kind: str) -> dict[str, Any]:
    """A manifest as a dict: from a mapping, a file path or YAML text (first doc of `kind`)."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, Path) or "\n" not in source:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        where = str(path)
    else:
        text, where = source, "<text>"
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {exc}") from exc
    if not docs:
        raise ConfigError(f"{where}: no YAML document")
    for doc in docs:
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
        if len(docs) == 1 or doc.get("kind") == kind:
            return doc
    raise ConfigError(f"{where}: no document of kind {kind}")


def load_graph(source: str | Path | Mapping[str, Any]) -> DynamoGraphDeployment:
    """Parse and validate a DGD from a path, YAML text or a dict; `ConfigError` names bad fields."""
    doc = read_manifest(source, kind="DynamoGraphDeployment")
    try:
        return DynamoGraphDeployment.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def dump_manifest(obj: CrdModel) -> dict[str, Any]:
    """The object as a manifest: camelCase keys; fields never set, null or empty left out."""
    result: dict[str, Any] = _prune(obj.model_dump(mode="json", by_alias=True, exclude_unset=True))
    for key in ("kind", "apiVersion"):
        value = getattr(obj, to_snake(key), None)
        if isinstance(value, str):
            result = {key: value, **{k: v for k, v in result.items() if k != key}}
    return result
