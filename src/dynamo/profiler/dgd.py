"""The generated graphs: ConfigMap `planner-profile-data` + a disaggregated DGD with a Planner.

`config_with_planner.yaml` runs the real backend (the base DGD of `engine.config` when given,
its prefill/decode services set to the chosen TP; else a Frontend and one prefill and one
decode worker of the backend); `mocker_config_with_planner.yaml` runs mocker workers that
simulate the chosen engines. Both carry the profile data inline in the ConfigMap (no shared
filesystem on a cluster) and mount it where the Planner reads it. Pure functions of plain data.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from dynamo.profiler.config import ProfileRequest
from dynamo.profiler.hardware import Engine
from dynamo.runtime.errors import ConfigError

PROFILE_CONFIGMAP = "planner-profile-data"
PROFILE_MOUNT = "/workspace/profiling_results"
CONFIGMAP_LIMIT_BYTES = 1024 * 1024  # the API server's limit on one object
MOCKER_TOKENIZER = "dynamo:tinymodel"
ROLE_FLAGS = {
    "vllm": {"prefill": ["--is-prefill-worker"], "decode": ["--is-decode-worker"]},
    "sglang": {
        "prefill": ["--disaggregation-mode", "prefill"],
        "decode": ["--disaggregation-mode", "decode"],
    },
    "trtllm": {
        "prefill": ["--disaggregation-mode", "prefill"],
        "decode": ["--disaggregation-mode", "decode"],
    },
}
TP_FLAG = {"vllm": "--tensor-parallel-size", "sglang": "--tp", "trtllm": "--tensor-parallel-size"}
MODEL_FLAG = {"vllm": "--model", "sglang": "--model-path", "trtllm": "--model-path"}
_TP_IN_TEXT = re.compile(r"(--tensor-parallel-size|--tp-size|--tp)(\s+|=)\d+")


def profile_configmap(data: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
    """ConfigMap `planner-profile-data` with the planner's JSON files; refuses over 1 MiB."""
    files = {name: json.dumps(value, separators=(",", ":")) for name, value in data.items()}
    size = sum(len(k) + len(v) for k, v in files.items())
    if size > CONFIGMAP_LIMIT_BYTES:
        raise ConfigError(
            f"the profile data is {size} bytes, over the 1 MiB ConfigMap limit: lower "
            "sweep.prefillInterpolationGranularity / decodeInterpolationGranularity"
        )
    metadata: dict[str, Any] = {"name": PROFILE_CONFIGMAP}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": files}


def _container(image: str, command: list[str], args: list[str]) -> dict[str, Any]:
    return {"image": image, "command": command, "args": args}


def _worker(role: str, tp: int, container: dict[str, Any], *, gpus: bool = True) -> dict[str, Any]:
    service: dict[str, Any] = {
        "componentType": "worker",
        "subComponentType": role,
        "replicas": 1,
        "extraPodSpec": {"mainContainer": container},
    }
    if gpus:
        service["resources"] = {"limits": {"gpu": str(tp)}}
    return service


def planner_service(
    request: ProfileRequest, backend: str, prefill: Engine, decode: Engine
) -> dict[str, Any]:
    sla = request.sla
    args = [
        "--backend",
        backend,
        "--ttft",
        f"{sla.ttft_ms:g}",
        "--itl",
        f"{sla.itl_ms:g}",
        "--isl",
        str(sla.isl),
        "--osl",
        str(sla.osl),
        "--prefill-engine-num-gpu",
        str(prefill.gpus),
        "--decode-engine-num-gpu",
        str(decode.gpus),
        "--profile-results-dir",
        PROFILE_MOUNT,
    ]
    for flag, value in request.planner_args:
        args += [f"--{flag}", value]
    return {
        "componentType": "planner",
        "replicas": 1,
        "extraPodSpec": {
            "volumes": [{"name": PROFILE_CONFIGMAP, "configMap": {"name": PROFILE_CONFIGMAP}}],
            "mainContainer": {
                **_container(request.image, ["python3", "-m", "dynamo.planner"], args),
                "volumeMounts": [
                    {"name": PROFILE_CONFIGMAP, "mountPath": PROFILE_MOUNT, "readOnly": True}
                ],
            },
        },
    }


def _frontend(image: str) -> dict[str, Any]:
    return {
        "componentType": "frontend",
        "replicas": 1,
        "extraPodSpec": {
            "mainContainer": _container(
                image, ["python3", "-m", "dynamo.frontend"], ["--router-mode", "kv"]
            )
        },
    }


def _graph(request: ProfileRequest, services: dict[str, Any], suffix: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"{request.name}{suffix}"[:63]}
    if request.namespace:
        metadata["namespace"] = request.namespace
    return {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": metadata,
        "spec": {"services": services},
    }


def _set_tp(service: dict[str, Any], backend: str, tp: int) -> None:
    """Set the TP degree of a base DGD worker: its GPU limit and its TP flag."""
    service.setdefault("resources", {}).setdefault("limits", {})["gpu"] = str(tp)
    container = service.setdefault("extraPodSpec", {}).setdefault("mainContainer", {})
    args = [str(a) for a in container.get("args") or []]
    if len(args) == 1 and " " in args[0]:  # `sh -c "python3 -m ... --tp 1 ..."`
        text = args[0]
        if _TP_IN_TEXT.search(text):
            container["args"] = [_TP_IN_TEXT.sub(lambda m: f"{m[1]}{m[2]}{tp}", text)]
        else:
            container["args"] = [f"{text} {TP_FLAG[backend]} {tp}"]
        return
    for i, arg in enumerate(args[:-1]):
        if arg in ("--tensor-parallel-size", "--tp", "--tp-size"):
            args[i + 1] = str(tp)
            break
    else:
        args += [TP_FLAG[backend], str(tp)]
    container["args"] = args


def real_graph(request: ProfileRequest, prefill: Engine, decode: Engine) -> dict[str, Any]:
    """The DGD on the real backend, with the chosen TP per role and a Planner."""
    backend = request.backend
    if request.base_config is not None:
        graph = copy.deepcopy(request.base_config)
        services = graph.get("spec", {}).get("services")
        if not isinstance(services, dict):
            raise ConfigError("engine.config: the base DGD has no spec.services")
        found = set()
        for svc in services.values():
            role = svc.get("subComponentType") if isinstance(svc, dict) else None
            if role in ("prefill", "decode"):
                _set_tp(svc, backend, prefill.gpus if role == "prefill" else decode.gpus)
                found.add(role)
        if found != {"prefill", "decode"}:
            raise ConfigError(
                "engine.config: the base DGD needs one service with subComponentType prefill "
                "and one with decode"
            )
        services["Planner"] = planner_service(request, backend, prefill, decode)
        graph.setdefault("metadata", {})["name"] = request.name
        if request.namespace:
            graph["metadata"]["namespace"] = request.namespace
        return graph
    module = f"dynamo.{backend}"
    services = {"Frontend": _frontend(request.image)}
    for role, eng in (("prefill", prefill), ("decode", decode)):
        args = [MODEL_FLAG[backend], request.model, *ROLE_FLAGS[backend][role]]
        args += [TP_FLAG[backend], str(eng.gpus)]
        services[f"{role.capitalize()}Worker"] = _worker(
            role, eng.gpus, _container(request.image, ["python3", "-m", module], args)
        )
    services["Planner"] = planner_service(request, backend, prefill, decode)
    return _graph(request, services, "")


def mocker_graph(request: ProfileRequest, prefill: Engine, decode: Engine) -> dict[str, Any]:
    """The DGD of mocker workers that simulate the chosen engines, with a Planner."""
    services = {"Frontend": _frontend(request.image)}
    for role, eng in (("prefill", prefill), ("decode", decode)):
        args = ["--model-path", MOCKER_TOKENIZER, "--model-name", request.model]
        args += [f"--is-{role}-worker", *eng.mocker_args()]
        services[f"Mocker{role.capitalize()}Worker"] = _worker(
            role,
            eng.gpus,
            _container(request.image, ["python3", "-m", "dynamo.mocker"], args),
            gpus=False,
        )
    services["Planner"] = planner_service(request, "mocker", prefill, decode)
    return _graph(request, services, "")


def dump_documents(*docs: Mapping[str, Any]) -> str:
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)


def _without_role_flags(container: dict[str, Any], backend: str) -> None:
    """Drop the prefill/decode role flags of `backend` from a worker's args (list or one
    `sh -c` string): a trial worker serves aggregated."""
    flags = [" ".join(role) for role in ROLE_FLAGS.get(backend, {}).values()]
    args = [str(a) for a in container.get("args") or []]
    if len(args) == 1 and " " in args[0]:
        text = args[0]
        for flag in flags:
            text = re.sub(rf"\s+{re.escape(flag)}(?=\s|$)", "", text)
        container["args"] = [text]
        return
    kept: list[str] = []
    i = 0
    while i < len(args):
        for flag in flags:
            parts = flag.split(" ")
            if args[i : i + len(parts)] == parts:
                i += len(parts)
                break
        else:
            kept.append(args[i])
            i += 1
    container["args"] = kept


def trial_graph(request: ProfileRequest, eng: Engine, name: str) -> dict[str, Any]:
    """The DGD thorough profiling deploys on Kubernetes to measure one candidate: a Frontend
    and one aggregated worker with the candidate's TP. Mocker requests: a mocker worker that
    simulates `eng`; real backends: the base DGD's frontend and decode worker (role flags
    dropped, TP set), else the backend's worker on `request.model`."""
    backend = request.backend
    if request.use_mocker:
        args = ["--model-path", MOCKER_TOKENIZER, "--model-name", request.model]
        worker = _worker(
            "",
            eng.gpus,
            _container(
                request.image, ["python3", "-m", "dynamo.mocker"], [*args, *eng.mocker_args()]
            ),
            gpus=False,
        )
        services = {"Frontend": _frontend(request.image), "Worker": worker}
    elif request.base_config is not None:
        base = copy.deepcopy(request.base_config).get("spec", {}).get("services")
        if not isinstance(base, dict):
            raise ConfigError("engine.config: the base DGD has no spec.services")
        services = {
            k: v
            for k, v in base.items()
            if isinstance(v, dict) and v.get("componentType") == "frontend"
        }
        workers = [
            v
            for v in base.values()
            if isinstance(v, dict) and v.get("subComponentType") == "decode"
        ]
        if not services or not workers:
            raise ConfigError(
                "engine.config: thorough profiling needs the base DGD's frontend service and a "
                "service with subComponentType decode"
            )
        worker = workers[0]
        container = worker.setdefault("extraPodSpec", {}).setdefault("mainContainer", {})
        _without_role_flags(container, backend)
        _set_tp(worker, backend, eng.gpus)
        services["Worker"] = worker
    else:
        args = [MODEL_FLAG[backend], request.model, TP_FLAG[backend], str(eng.gpus)]
        container = _container(request.image, ["python3", "-m", f"dynamo.{backend}"], args)
        services = {
            "Frontend": _frontend(request.image),
            "Worker": _worker("", eng.gpus, container),
        }
    for service in services.values():
        service["replicas"] = 1
    services["Worker"].pop("subComponentType", None)  # aggregated: neither prefill nor decode
    graph = _graph(request, services, "")
    graph["metadata"]["name"] = name
    return graph
