"""Validation of a DynamoGraphDeploymentRequest before anything is made for it: the first bad
field is named (`RequestFailedError`), as the request's `Validation` condition says it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo.deploy.dgdr import load_request
from dynamo.operator.config import OperatorConfig
from dynamo.operator.profiling import MAX_NAME_LENGTH, job_name
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.kube import KubeClient

SLA_KEYS = ("ttft", "itl", "isl", "osl")
GPU_KEYS = (
    ("minNumGpusPerEngine", "min_num_gpus_per_engine"),
    ("maxNumGpusPerEngine", "max_num_gpus_per_engine"),
    ("numGpusPerNode", "num_gpus_per_node"),
)


class RequestFailedError(Exception):
    """The request cannot go on: `reason` is the condition reason, the message says why."""

    def __init__(self, condition: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.condition = condition
        self.reason = reason


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestFailedError(
            "Validation", "InvalidSpec", f"{path}: must be a number, got {value!r}"
        )
    if value <= 0:
        raise RequestFailedError("Validation", "InvalidSpec", f"{path}: must be > 0, got {value}")
    return float(value)


def _validate_sweep_config(config: Mapping[str, Any]) -> None:
    """The SLA and GPU numbers of `profilingConfig.config`, camelCase or snake_case."""
    base = "spec.profilingConfig.config"
    sla = config.get("sla") or {}
    if not isinstance(sla, Mapping):
        raise RequestFailedError("Validation", "InvalidSpec", f"{base}.sla: must be a mapping")
    for key in SLA_KEYS:
        if sla.get(key) is not None:
            _number(sla[key], f"{base}.sla.{key}")
    hardware = config.get("hardware") or {}
    if not isinstance(hardware, Mapping):
        raise RequestFailedError("Validation", "InvalidSpec", f"{base}.hardware: must be a mapping")
    found: dict[str, float] = {}
    for camel, snake in GPU_KEYS:
        for key in (camel, snake):
            if hardware.get(key) is not None:
                found[camel] = _number(hardware[key], f"{base}.hardware.{key}")
    low, high = found.get("minNumGpusPerEngine"), found.get("maxNumGpusPerEngine")
    if low is not None and high is not None and low > high:
        raise RequestFailedError(
            "Validation",
            "InvalidSpec",
            f"{base}.hardware: minNumGpusPerEngine ({low:g}) > maxNumGpusPerEngine ({high:g})",
        )


async def validate(api: KubeClient, body: Mapping[str, Any], config: OperatorConfig) -> None:
    """Raise `RequestFailedError` naming the first bad field: the spec's shape (model, backend,
    types), SLA and GPU counts > 0, the referenced ConfigMap key, names and namespaces."""
    meta = body.get("metadata", {})
    try:
        request = load_request(dict(body))
    except ConfigError as exc:
        raise RequestFailedError("Validation", "InvalidSpec", str(exc)) from exc
    name = str(meta.get("name", ""))
    if len(name) > MAX_NAME_LENGTH:
        raise RequestFailedError(
            "Validation",
            "InvalidSpec",
            f"metadata.name: at most {MAX_NAME_LENGTH} characters (Job {job_name(name)} "
            "labels its pods with its name)",
        )
    profiling = request.spec.profiling_config
    if profiling is not None and profiling.config:
        _validate_sweep_config(profiling.config)
    overrides = request.spec.deployment_overrides
    target = (overrides.namespace if overrides else None) or meta.get("namespace")
    if config.namespace and target != config.namespace:
        raise RequestFailedError(
            "Validation",
            "InvalidSpec",
            f"spec.deploymentOverrides.namespace: the operator watches only namespace "
            f"{config.namespace}, not {target}",
        )
    ref = profiling.config_map_ref if profiling is not None else None
    if ref is not None:
        cm = await api.get("v1", "ConfigMap", ref.name, meta.get("namespace"))
        path = "spec.profilingConfig.configMapRef"
        if cm is None:
            raise RequestFailedError(
                "Validation", "InvalidSpec", f"{path}.name: ConfigMap {ref.name} does not exist"
            )
        if ref.key not in (cm.get("data") or {}):
            raise RequestFailedError(
                "Validation",
                "InvalidSpec",
                f"{path}.key: ConfigMap {ref.name} has no key {ref.key}",
            )
