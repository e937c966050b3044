"""ConfigMap volumes on one machine: `dynamo serve` materialises the ConfigMaps of the graph's
own file (the documents beside the DGD, e.g. the profiler's `planner-profile-data`) as
directories of the run dir, and points each mount path in a service's args and env there.

Only ConfigMaps in the same file are known locally; a volume naming another one is left as
it is (the process sees the path it would see in a pod, which does not exist here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dynamo.deploy.builder import ServiceSpec
from dynamo.runtime.errors import ConfigError


def read_configmaps(path: Path) -> dict[str, dict[str, str]]:
    """The `data` of every ConfigMap document in `path`, by name."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    out = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            name = (doc.get("metadata") or {}).get("name")
            data = doc.get("data") or {}
            if not name or not isinstance(data, dict):
                raise ConfigError(f"{path}: a ConfigMap needs metadata.name and a data mapping")
            out[str(name)] = {str(k): str(v) for k, v in data.items()}
    return out


def _mounts(spec: ServiceSpec, known: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(ConfigMap name, mount path) of the service's volumes backed by a known ConfigMap."""
    pod = spec.spec.extra_pod_spec
    if pod is None or pod.main_container is None:
        return []
    volumes: dict[str, str] = {}
    for volume in (pod.model_extra or {}).get("volumes") or []:
        source = volume.get("configMap") if isinstance(volume, dict) else None
        if isinstance(source, dict) and source.get("name") in known:
            volumes[str(volume.get("name"))] = str(source["name"])
    mounts = (pod.main_container.model_extra or {}).get("volumeMounts") or []
    return [
        (volumes[m["name"]], str(m["mountPath"]).rstrip("/"))
        for m in mounts
        if isinstance(m, dict) and m.get("name") in volumes and m.get("mountPath")
    ]


def _swap(value: str, mount: str, local: str) -> str:
    if value == mount or value.startswith(mount + "/"):
        return local + value[len(mount) :]
    return value.replace(f"={mount}", f"={local}")


def mount_locally(
    specs: list[ServiceSpec], configmaps: Mapping[str, Mapping[str, Any]], root: Path
) -> list[ServiceSpec]:
    """The specs with each ConfigMap mount path replaced by `root/<configmap>` in args/env."""
    out = []
    for spec in specs:
        mounts = _mounts(spec, configmaps)
        args, env = list(spec.args), dict(spec.env)
        for name, mount in mounts:
            local = str(root / name)
            args = [_swap(a, mount, local) for a in args]
            env = {k: _swap(v, mount, local) for k, v in env.items()}
        out.append(dataclasses.replace(spec, args=tuple(args), env=env) if mounts else spec)
    return out


def write_configmaps(configmaps: Mapping[str, Mapping[str, str]], root: Path) -> None:
    for name, data in configmaps.items():
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in data.items():
            (directory / key).write_text(value)
