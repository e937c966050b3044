"""Pod templates of graph services: the operator's defaults (container `main`, env, ports,
probes, /dev/shm) merged with the service's `extraPodSpec` and `mainContainer`.

Merge order, as Dynamo's operator: defaults, then `mainContainer` on top, then the service's
`envs` and `resources` (they win), then `livenessProbe`/`readinessProbe` replace the defaults.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynamo.deploy.builder import ServiceSpec
from dynamo.deploy.graph import DynamoGraphDeployment
from dynamo.runtime.errors import ConfigError

MAIN_CONTAINER = "main"
DEFAULT_SHM_SIZE = "8Gi"
TERMINATION_GRACE_PERIOD_S = 60
DEFAULT_FS_GROUP = 1000
COMPILATION_CACHE_PATHS = {"vllm": ("/root/.cache/vllm", "VLLM_CACHE_ROOT")}
# The runtime's request plane and ZMQ event publisher bind and advertise this host: the pod IP,
# so that peers in other pods can dial them.
POD_IP_ENV = {"DYN_TCP_RPC_HOST": {"fieldRef": {"fieldPath": "status.podIP"}}}
# Fields of mainContainer that the graph builder already turned into ServiceSpec fields.
_BUILDER_FIELDS = {"name", "image", "command", "args", "workingDir", "env"}


@dataclass(frozen=True)
class PodOptions:
    """Per-pod choices made by the manifest builder, not by the service spec."""

    default_image: str
    service_account: str | None = None
    probes: bool = True  # False for the non-leader pods of a multi-node group
    mpi_secret: str | None = None  # SSH key Secret of a multi-node TensorRT-LLM group


def _http_probe(path: str, port: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **timing}


def default_probes(svc: ServiceSpec) -> dict[str, dict[str, Any]]:
    """Dynamo's default probes: `/live` and `/health` on the frontend's http port or on the
    worker's system port (9090); workers get a 2-hour startup window for model loading."""
    if svc.is_frontend:
        return {
            "livenessProbe": _http_probe(
                "/live",
                "http",
                initialDelaySeconds=15,
                periodSeconds=10,
                timeoutSeconds=1,
                failureThreshold=3,
            ),
            "readinessProbe": _http_probe(
                "/health",
                "http",
                initialDelaySeconds=10,
                periodSeconds=10,
                timeoutSeconds=3,
                failureThreshold=3,
            ),
        }
    if svc.is_worker and "system" in svc.ports:
        return {
            "livenessProbe": _http_probe(
                "/live", "system", periodSeconds=5, timeoutSeconds=4, failureThreshold=1
            ),
            "readinessProbe": _http_probe(
                "/health", "system", periodSeconds=10, timeoutSeconds=4, failureThreshold=3
            ),
            "startupProbe": _http_probe(
                "/live", "system", periodSeconds=10, timeoutSeconds=5, failureThreshold=720
            ),
        }
    return {}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: dicts merge recursively, anything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _raw(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    return dict(model.model_dump(mode="json", by_alias=True, exclude_none=True))


def _env(svc: ServiceSpec, dgd: DynamoGraphDeployment, main: Mapping[str, Any]) -> list[Any]:
    """Injected env < mainContainer.env < graph and service `envs`; sorted by name."""
    explicit = {v.name for v in [*dgd.spec.envs, *svc.spec.envs]}
    values: dict[str, dict[str, Any]] = {
        k: {"name": k, "valueFrom": v} for k, v in POD_IP_ENV.items()
    }
    values.update({k: {"name": k, "value": v} for k, v in svc.env.items()})
    values.update({k: {"name": k, "valueFrom": v} for k, v in svc.env_value_from.items()})
    for var in main.get("env") or []:
        if var["name"] not in explicit:
            values[var["name"]] = dict(var)
    return [values[k] for k in sorted(values)]


def _volumes(svc: ServiceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """(pod volumes, container mounts, extra env) for /dev/shm and the service's PVC mounts."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    shm = svc.spec.shared_memory
    if shm is None or not shm.disabled:
        size = (shm.size if shm else None) or DEFAULT_SHM_SIZE
        volumes.append(
            {"name": "shared-memory", "emptyDir": {"medium": "Memory", "sizeLimit": size}}
        )
        mounts.append({"name": "shared-memory", "mountPath": "/dev/shm"})
    for i, mount in enumerate(svc.spec.volume_mounts):
        path = mount.mount_point
        if mount.use_as_compilation_cache and path is None:
            known = COMPILATION_CACHE_PATHS.get(svc.backend_framework or "")
            if known is None:
                raise ConfigError(
                    f"spec.services.{svc.name}.volumeMounts[{i}].mountPoint: required for a "
                    f"compilation cache of backend {svc.backend_framework or 'unknown'}"
                )
            path, env_name = known
            env[env_name] = path
        volumes.append({"name": mount.name, "persistentVolumeClaim": {"claimName": mount.name}})
        mounts.append({"name": mount.name, "mountPath": path})
    return volumes, mounts, env


def main_container(
    svc: ServiceSpec, dgd: DynamoGraphDeployment, options: PodOptions, mounts: list[Any]
) -> dict[str, Any]:
    """The `main` container: defaults, then mainContainer, then the service's own fields."""
    extra = svc.spec.extra_pod_spec
    main_raw = _raw(extra.main_container if extra else None)
    container: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "image": svc.image or options.default_image,
        "command": list(svc.command),
        "args": list(svc.args),
    }
    if svc.working_dir:
        container["workingDir"] = svc.working_dir
    container["env"] = _env(svc, dgd, main_raw)
    if svc.env_from_secret:
        container["envFrom"] = [{"secretRef": {"name": svc.env_from_secret}}]
    if svc.ports:
        container["ports"] = [
            {"name": name, "containerPort": port, "protocol": "TCP"}
            for name, port in svc.ports.items()
        ]
    if options.probes:
        container.update(default_probes(svc))
    container["volumeMounts"] = list(mounts)
    for key, value in main_raw.items():
        if key in _BUILDER_FIELDS:
            continue
        if key in ("volumeMounts", "envFrom", "ports") and isinstance(value, list):
            container[key] = [*container.get(key, []), *value]
        elif isinstance(value, Mapping) and isinstance(container.get(key), Mapping):
            container[key] = deep_merge(container[key], value)
        else:
            container[key] = copy.deepcopy(value)
    resources = deep_merge(main_raw.get("resources") or {}, svc.resources)
    claims = svc.spec.resources.claims if svc.spec.resources else []
    if claims:
        resources["claims"] = [_raw(c) for c in claims]
    if resources:
        container["resources"] = resources
    for key, probe in (
        ("livenessProbe", svc.spec.liveness_probe),
        ("readinessProbe", svc.spec.readiness_probe),
    ):
        if probe is not None and options.probes:
            container[key] = copy.deepcopy(probe)
    if not options.probes:
        for key in ("livenessProbe", "readinessProbe", "startupProbe"):
            container.pop(key, None)
    if not container["volumeMounts"]:
        del container["volumeMounts"]
    return container


def pod_template(
    svc: ServiceSpec,
    dgd: DynamoGraphDeployment,
    labels: Mapping[str, str],
    options: PodOptions,
) -> dict[str, Any]:
    """A `PodTemplateSpec` for one service: base pod spec, extraPodSpec on top, main first."""
    volumes, mounts, cache_env = _volumes(svc)
    if cache_env:
        svc = dataclasses.replace(svc, env=dict(sorted({**svc.env, **cache_env}.items())))
    main = main_container(svc, dgd, options, mounts)
    extra_raw = _raw(svc.spec.extra_pod_spec)
    extra_raw.pop("mainContainer", None)
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_S}
    if "securityContext" not in extra_raw:
        spec["securityContext"] = {"fsGroup": DEFAULT_FS_GROUP}
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    sidecars = list(extra_raw.pop("containers", None) or [])
    extra_volumes = list(extra_raw.pop("volumes", None) or [])
    spec = deep_merge(spec, extra_raw)
    spec["containers"] = [main, *sidecars]
    if volumes or extra_volumes:
        spec["volumes"] = [*volumes, *extra_volumes]
    pod_meta = svc.spec.extra_pod_metadata
    meta: dict[str, Any] = {"labels": {**labels, **(pod_meta.labels if pod_meta else {})}}
    if pod_meta and pod_meta.annotations:
        meta["annotations"] = dict(pod_meta.annotations)
    return {"metadata": meta, "spec": spec}
