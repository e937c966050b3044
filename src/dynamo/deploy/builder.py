"""The graph builder: a pure function from a DynamoGraphDeployment to per-service process specs.

`dynamo serve` turns each `ServiceSpec` into child processes; the operator turns the same specs
into Deployments. The two differ only where `mode` says (discovery backend, system ports).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dynamo.deploy.graph import (
    FRONTEND_COMPONENT_TYPES,
    WORKER_COMPONENT_TYPES,
    ComponentSpec,
    DynamoGraphDeployment,
    ResourceItem,
)
from dynamo.runtime.errors import ConfigError

Mode = Literal["local", "kubernetes"]

FRONTEND_HTTP_PORT = 8000
WORKER_SYSTEM_PORT = 9090
PLANNER_METRICS_PORT = 9085
GLOBAL_DYNAMO_NAMESPACE = "dynamo"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DISCOVERY_ANNOTATION = "nvidia.com/dynamo-discovery-backend"
DEFAULT_COMMANDS: dict[str, tuple[str, ...]] = {
    "frontend": ("python3", "-m", "dynamo.frontend"),
    "main": ("python3", "-m", "dynamo.frontend"),
    "planner": ("python3", "-m", "dynamo.planner"),
}
# Downward-API env vars every pod gets on Kubernetes.
POD_FIELD_ENVS: dict[str, str] = {
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "POD_UID": "metadata.uid",
}
_BACKEND_RE = re.compile(r"python[0-9.]*\s+-m\s+dynamo\.(vllm|sglang|trtllm)\b")
_HTTP_PORT_RE = re.compile(r"(--http-port(?:=|\s+))\S+")


@dataclass(frozen=True)
class ServiceSpec:
    """Everything needed to run one service of a graph, in either mode."""

    name: str  # key of spec.services
    k8s_name: str  # `{dgd}-{lowercase(name)}`: DCD / Deployment / Service name
    component_type: str  # frontend | worker | planner | prefill | decode | epp | main
    sub_component_type: str | None
    replicas: int
    command: tuple[str, ...]  # container command (defaults applied)
    args: tuple[str, ...]  # container args
    env: dict[str, str]  # literal values, sorted by name
    env_value_from: dict[str, dict[str, Any]]  # valueFrom sources (k8s only), by name
    env_from_secret: str | None
    ports: dict[str, int]  # port name -> container port
    image: str | None
    working_dir: str | None
    resources: dict[str, dict[str, str]]  # {"requests"|"limits": {k8s resource name: qty}}
    dynamo_namespace: str
    backend_framework: str | None
    node_count: int  # 1 unless multinode
    labels: dict[str, str]
    spec: ComponentSpec = field(repr=False)  # the source, for fields the builder does not map

    @property
    def is_frontend(self) -> bool:
        return self.component_type in FRONTEND_COMPONENT_TYPES

    @property
    def is_worker(self) -> bool:
        return self.component_type in WORKER_COMPONENT_TYPES

    @property
    def argv(self) -> tuple[str, ...]:
        """`command + args`, as the container runtime would execute them."""
        return self.command + self.args


def compute_dynamo_namespace(k8s_namespace: str, dgd_name: str, *, is_global: bool = False) -> str:
    """`{k8s-namespace}-{dgd-name}` with dots in the name replaced, or `dynamo` when global."""
    if is_global:
        return GLOBAL_DYNAMO_NAMESPACE
    return f"{k8s_namespace}-{dgd_name.replace('.', '-')}"


def component_k8s_name(dgd_name: str, service: str) -> str:
    return f"{dgd_name}-{service.lower()}"


def detect_backend(argv: tuple[str, ...]) -> str | None:
    """The backend named by `python3 -m dynamo.{vllm|sglang|trtllm}` in a command line."""
    found = set(_BACKEND_RE.findall(" ".join(argv)))
    if len(found) > 1:
        raise ConfigError(f"command runs several backends: {sorted(found)}")
    return found.pop() if found else None


def map_resources(
    requests: ResourceItem | None, limits: ResourceItem | None
) -> dict[str, dict[str, str]]:
    """DGD resources as Kubernetes resource lists (`gpu` -> `nvidia.com/gpu` or `gpuType`)."""
    out: dict[str, dict[str, str]] = {}
    for key, item in (("requests", requests), ("limits", limits)):
        if item is None:
            continue
        mapped: dict[str, str] = {}
        if item.cpu is not None:
            mapped["cpu"] = item.cpu
        if item.memory is not None:
            mapped["memory"] = item.memory
        if item.gpu is not None:
            mapped[item.gpu_type or DEFAULT_GPU_RESOURCE] = item.gpu
        mapped.update(item.custom)
        if mapped:
            out[key] = mapped
    return out


def _with_http_port(argv: tuple[str, ...], port: int) -> tuple[str, ...]:
    """Point an explicit `--http-port` (argv or inside a shell script) at `port`."""
    out = list(argv)
    for i, part in enumerate(out):
        if part == "--http-port" and i + 1 < len(out):
            out[i + 1] = str(port)
            return tuple(out)
        if part.startswith("--http-port="):
            out[i] = f"--http-port={port}"
            return tuple(out)
        if " " in part and _HTTP_PORT_RE.search(part):
            out[i] = _HTTP_PORT_RE.sub(lambda m: m.group(1) + str(port), part)
            return tuple(out)
    return tuple(out)


def _command(name: str, spec: ComponentSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    container = spec.extra_pod_spec.main_container if spec.extra_pod_spec else None
    command = tuple(container.command or ()) if container else ()
    args = tuple(container.args or ()) if container else ()
    if not command and args:
        command = ("/bin/sh", "-c")  # the operator's base container runs args with a shell
    if not command:
        default = DEFAULT_COMMANDS.get(spec.component_type or "")
        if default is None:
            raise ConfigError(
                f"spec.services.{name}.extraPodSpec.mainContainer: a {spec.component_type} "
                "needs a command or args"
            )
        command = default
    return command, args


def _system_env(
    *,
    dgd: DynamoGraphDeployment,
    spec: ComponentSpec,
    k8s_namespace: str,
    dynamo_namespace: str,
    mode: Mode,
    discovery_backend: str,
    http_port: int,
    infrastructure: Mapping[str, str],
) -> dict[str, str]:
    env = {
        "DYN_NAMESPACE": dynamo_namespace,
        "DYN_COMPONENT": spec.component_type or "",
        "DYN_PARENT_DGD_K8S_NAME": dgd.name,
        "DYN_PARENT_DGD_K8S_NAMESPACE": k8s_namespace,
        "DYN_DISCOVERY_BACKEND": discovery_backend,
        **infrastructure,
    }
    if discovery_backend == "kubernetes" and mode == "kubernetes":
        # The operator creates the graph's discovery Service, so pod readiness can be liveness.
        env["DYN_KUBE_DISCOVERY_LIVENESS"] = "readiness"
    kind = spec.component_type or ""
    if kind in FRONTEND_COMPONENT_TYPES:
        env["DYNAMO_PORT"] = str(http_port)
        env["DYN_HTTP_PORT"] = str(http_port)
    elif kind in WORKER_COMPONENT_TYPES and mode == "kubernetes":
        env["DYN_SYSTEM_ENABLED"] = "true"
        env["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] = '["generate"]'
        env["DYN_SYSTEM_PORT"] = str(WORKER_SYSTEM_PORT)
        env["DYN_HEALTH_CHECK_ENABLED"] = "false"
    elif kind == "planner" and mode == "kubernetes":
        env["PLANNER_PROMETHEUS_PORT"] = str(PLANNER_METRICS_PORT)
    return env


def _ports(kind: str, mode: Mode, http_port: int) -> dict[str, int]:
    if kind in FRONTEND_COMPONENT_TYPES:
        return {"http": http_port}
    if mode == "kubernetes" and kind in WORKER_COMPONENT_TYPES:
        return {"system": WORKER_SYSTEM_PORT}
    if mode == "kubernetes" and kind == "planner":
        return {"metrics": PLANNER_METRICS_PORT}
    return {}


def build_service(
    dgd: DynamoGraphDeployment,
    name: str,
    *,
    k8s_namespace: str | None = None,
    mode: Mode = "local",
    replicas: int | None = None,
    http_port: int = FRONTEND_HTTP_PORT,
    discovery_backend: str | None = None,
    dynamo_namespace: str | None = None,
    infrastructure: Mapping[str, str] | None = None,
) -> ServiceSpec:
    """The `ServiceSpec` of one service; see `build_graph` for the arguments."""
    try:
        spec = dgd.spec.services[name]
    except KeyError:
        raise ConfigError(f"graph {dgd.name!r} has no service {name!r}") from None
    k8s_ns = k8s_namespace or dgd.metadata.namespace or "default"
    dyn_ns = dynamo_namespace or compute_dynamo_namespace(
        k8s_ns, dgd.name, is_global=spec.global_dynamo_namespace
    )
    backend = discovery_backend or _default_discovery(dgd, mode)
    command, args = _command(name, spec)
    kind = spec.component_type or ""
    if kind in FRONTEND_COMPONENT_TYPES:
        command, args = _with_http_port(command, http_port), _with_http_port(args, http_port)
    framework: str | None = dgd.spec.backend_framework
    if kind in WORKER_COMPONENT_TYPES:
        detected = detect_backend(command + args)
        if detected and framework and detected != framework:
            raise ConfigError(
                f"spec.services.{name}: command runs dynamo.{detected} "
                f"but spec.backendFramework is {framework}"
            )
        framework = detected or framework
    # Injected values first; graph envs, then the service's own envs, override them by name.
    env = _system_env(
        dgd=dgd,
        spec=spec,
        k8s_namespace=k8s_ns,
        dynamo_namespace=dyn_ns,
        mode=mode,
        discovery_backend=backend,
        http_port=http_port,
        infrastructure=infrastructure or {},
    )
    value_from: dict[str, dict[str, Any]] = {}
    if mode == "kubernetes":
        value_from = {k: {"fieldRef": {"fieldPath": v}} for k, v in POD_FIELD_ENVS.items()}
    for var in [*dgd.spec.envs, *spec.envs]:
        if var.value_from is not None:
            value_from[var.name] = var.value_from
            env.pop(var.name, None)
        else:
            env[var.name] = var.value or ""
            value_from.pop(var.name, None)
    container = spec.extra_pod_spec.main_container if spec.extra_pod_spec else None
    resources = spec.resources
    labels = {
        "nvidia.com/dynamo-graph-deployment-name": dgd.name,
        "nvidia.com/dynamo-component": name,
        "nvidia.com/dynamo-namespace": dyn_ns,
        "nvidia.com/dynamo-component-type": kind,
    }
    if spec.sub_component_type:
        labels["nvidia.com/dynamo-sub-component-type"] = spec.sub_component_type
    return ServiceSpec(
        name=name,
        k8s_name=component_k8s_name(dgd.name, name),
        component_type=kind,
        sub_component_type=spec.sub_component_type,
        replicas=spec.replica_count if replicas is None else replicas,
        command=command,
        args=args,
        env=dict(sorted(env.items())),
        env_value_from=dict(sorted(value_from.items())),
        env_from_secret=spec.env_from_secret,
        ports=_ports(kind, mode, http_port),
        image=container.image if container else None,
        working_dir=container.working_dir if container else None,
        resources=map_resources(
            resources.requests if resources else None, resources.limits if resources else None
        ),
        dynamo_namespace=dyn_ns,
        backend_framework=framework,
        node_count=spec.multinode.node_count if spec.multinode else 1,
        labels={**labels, **spec.labels},
        spec=spec,
    )


def _default_discovery(dgd: DynamoGraphDeployment, mode: Mode) -> str:
    if mode == "local":
        return "file"
    return dgd.metadata.annotations.get(DISCOVERY_ANNOTATION, "kubernetes")


def build_graph(
    dgd: DynamoGraphDeployment,
    *,
    k8s_namespace: str | None = None,
    mode: Mode = "local",
    replicas: Mapping[str, int] | None = None,
    http_port: int = FRONTEND_HTTP_PORT,
    discovery_backend: str | None = None,
    dynamo_namespace: str | None = None,
    infrastructure: Mapping[str, str] | None = None,
) -> list[ServiceSpec]:
    """One `ServiceSpec` per service, in manifest order.

    k8s_namespace: namespace for DYN_NAMESPACE (default: metadata.namespace, else `default`).
    mode: `local` (file discovery, no system ports) or `kubernetes` (discovery from the
      `nvidia.com/dynamo-discovery-backend` annotation, default kubernetes; system port 9090
      on workers; downward-API pod env).
    replicas: per-service replica overrides (the scaling hook).
    http_port: the frontend's port (8000).
    discovery_backend / dynamo_namespace: force these instead of the mode's defaults.
    infrastructure: extra env for every service, e.g. `{"NATS_SERVER": ..., "ETCD_ENDPOINTS": ...}`.
    """
    overrides = dict(replicas or {})
    unknown = sorted(set(overrides) - set(dgd.spec.services))
    if unknown:
        raise ConfigError(f"graph {dgd.name!r} has no service {', '.join(unknown)}")
    return [
        build_service(
            dgd,
            name,
            k8s_namespace=k8s_namespace,
            mode=mode,
            replicas=overrides.get(name),
            http_port=http_port,
            discovery_backend=discovery_backend,
            dynamo_namespace=dynamo_namespace,
            infrastructure=infrastructure,
        )
        for name in dgd.spec.services
    ]


def shell_words(spec: ServiceSpec) -> tuple[str, ...]:
    """`argv` with a `/bin/sh -c "<simple command>"` wrapper removed when that is safe.

    Lets a local runner start (and signal) the real process instead of a shell; a script with
    shell syntax (pipes, `&&`, `$VAR`, ...) keeps its shell.
    """
    argv = spec.argv
    if len(argv) == 3 and argv[0] in ("/bin/sh", "sh", "/bin/bash", "bash") and argv[1] == "-c":
        script = argv[2]
        if not re.search(r"[|&;<>()$`\\*?~\[\]{}\n#]", script):
            return tuple(shlex.split(script))
    return argv
