"""The objects a DynamoGraphDeploymentRequest's profiling runs with (pure functions):

- ConfigMap `dgdr-input-<dgdr>`: the request itself (`dgdr.yaml`), mounted into the Job;
- ServiceAccount, Role and RoleBinding `dgdr-profiler-<dgdr>`: the Job may create ConfigMaps
  and write only `dgdr-output-<dgdr>`, and in thorough mode create, read and delete
  DynamoGraphDeployments (its trial graphs) (unless the platform names an account of its own);
- Job `profile-<dgdr>`: `python -m dynamo.profiler.job`, which runs the profiler and writes
  ConfigMap `dgdr-output-<dgdr>` itself through the Kubernetes API, or its reason for failing
  to the container's termination message.

Every object is owned by the request, so deleting it deletes them (not the graph it created).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from dynamo.operator.config import OperatorConfig
from dynamo.operator.rbac import RBAC_API_VERSION

DGDR_API_VERSION = "nvidia.com/v1alpha1"
DGDR_KIND = "DynamoGraphDeploymentRequest"
DGDR_PLURAL = "dynamographdeploymentrequests"
JOB_API_VERSION = "batch/v1"
# On every object made for a request, and on the graph it creates (as Dynamo labels it).
REQUEST_LABEL = "dgdr.nvidia.com/name"
REQUEST_NAMESPACE_LABEL = "dgdr.nvidia.com/namespace"
MANAGED_BY_LABEL = "nvidia.com/managed-by"
MANAGED_BY = "dynamo-operator"
APP_LABEL = "app"
PROFILER_APP = "dynamo-profiler"
# Where the Job finds the request, the base config of `profilingConfig.configMapRef`, and
# where the profiler writes (an emptyDir, or `profilingConfig.outputPVC`).
INPUT_DIR = "/etc/dgdr"
INPUT_KEY = "dgdr.yaml"
BASE_CONFIG_DIR = "/config"
OUTPUT_DIR = "/data"
TERMINATION_LOG = "/dev/termination-log"
# A Job's pods carry `job-name=<job>`: a label value of at most 63 characters.
MAX_NAME_LENGTH = 63 - len("profile-")


def job_name(request: str) -> str:
    return f"profile-{request}"


def input_configmap_name(request: str) -> str:
    return f"dgdr-input-{request}"


def output_configmap_name(request: str) -> str:
    return f"dgdr-output-{request}"


def profiler_account_name(request: str) -> str:
    return f"dgdr-profiler-{request}"


def request_labels(name: str, namespace: str) -> dict[str, str]:
    return {
        REQUEST_LABEL: name,
        REQUEST_NAMESPACE_LABEL: namespace,
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": DGDR_API_VERSION,
        "kind": DGDR_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = body["metadata"]
    labels = {**request_labels(meta["name"], meta["namespace"]), APP_LABEL: PROFILER_APP}
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(body)],
    }


def _profiling(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("spec", {}).get("profilingConfig") or {})


def profiler_input(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the profiler reads it: its spec, with `engine.config` pointing at the
    mounted base config when `profilingConfig.configMapRef` names one (as Dynamo does)."""
    meta = body["metadata"]
    spec = copy.deepcopy(dict(body.get("spec") or {}))
    profiling = spec.get("profilingConfig") or {}
    ref = profiling.get("configMapRef")
    if ref:
        config = profiling.setdefault("config", {}) or {}
        profiling["config"] = config
        engine = config.setdefault("engine", {}) or {}
        config["engine"] = engine
        engine["config"] = f"{BASE_CONFIG_DIR}/{ref.get('key') or 'disagg.yaml'}"
    return {
        "apiVersion": DGDR_API_VERSION,
        "kind": DGDR_KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": spec,
    }


def input_configmap(body: Mapping[str, Any]) -> dict[str, Any]:
    name = input_configmap_name(body["metadata"]["name"])
    text = yaml.safe_dump(profiler_input(body), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(body, name),
        "data": {INPUT_KEY: text},
    }


def is_thorough(body: Mapping[str, Any]) -> bool:
    """Whether the request profiles in thorough mode (`profilingConfig.config.sweep.
    searchStrategy: thorough`; the profiler reads the same key)."""
    config = _profiling(body).get("config") or {}
    sweep = (config.get("sweep") if isinstance(config, Mapping) else None) or {}
    if not isinstance(sweep, Mapping):
        return False
    return (sweep.get("searchStrategy") or sweep.get("search_strategy")) == "thorough"


# Thorough profiling deploys a trial DGD per candidate (`<dgdr>-trial-tp<N>`), waits for it
# to be ready and deletes it; names are not known in advance, so not limited by name.
TRIAL_GRAPH_RULE: dict[str, Any] = {
    "apiGroups": ["nvidia.com"],
    "resources": ["dynamographdeployments"],
    "verbs": ["create", "get", "list", "watch", "delete"],
}


def profiler_rules(request: str, *, thorough: bool = False) -> list[dict[str, Any]]:
    """What the profiling Job does with the API: server-side apply of its output ConfigMap
    (create, as RBAC cannot limit `create` by name; get and patch of that one only), and in
    thorough mode its trial DGDs (`TRIAL_GRAPH_RULE`)."""
    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [output_configmap_name(request)],
            "verbs": ["get", "patch"],
        },
    ]
    if thorough:
        rules.append(copy.deepcopy(TRIAL_GRAPH_RULE))
    return rules


def profiler_rbac(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Job's own account, `profiler_rules` in the request's namespace."""
    request = body["metadata"]["name"]
    name = profiler_account_name(request)
    rules = profiler_rules(request, thorough=is_thorough(body))
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(body, name)},
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": _metadata(body, name),
            "rules": rules,
        },
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "RoleBinding",
            "metadata": _metadata(body, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": name, "namespace": body["metadata"]["namespace"]}
            ],
        },
    ]


def _hf_token_env(body: Mapping[str, Any], config: OperatorConfig) -> list[dict[str, Any]]:
    ref = _profiling(body).get("hfTokenSecret")
    if ref:
        name, key = ref["name"], ref.get("key") or "HF_TOKEN"
    elif config.profiler_hf_token_secret:
        name, _, key = config.profiler_hf_token_secret.partition(":")
        key = key or "HF_TOKEN"
    else:
        return []
    source = {"secretKeyRef": {"name": name, "key": key}}
    return [{"name": "HF_TOKEN", "valueFrom": source}]


def _pull_secrets(body: Mapping[str, Any], config: OperatorConfig) -> list[dict[str, str]]:
    names = [s.strip() for s in config.profiler_image_pull_secrets.split(",") if s.strip()]
    for name in _profiling(body).get("imagePullSecrets") or []:
        if name not in names:
            names.append(name)
    return [{"name": n} for n in names]


def profiling_job(body: Mapping[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """Job `profile-<dgdr>`: one profiler pod, retried `profiler_backoff_limit` times, killed
    after `activeDeadlineSeconds`, deleted `profiler_ttl_s` after it finished."""
    meta = body["metadata"]
    request, namespace = meta["name"], meta["namespace"]
    profiling = _profiling(body)
    labels = {**request_labels(request, namespace), APP_LABEL: PROFILER_APP}
    env: list[dict[str, Any]] = [
        {"name": "DGDR_NAME", "value": request},
        {
            "name": "DGDR_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "DGDR_UID", "value": meta["uid"]},
        *({"name": k, "value": v} for k, v in sorted(config.infrastructure_env.items())),
        *_hf_token_env(body, config),
    ]
    mounts = [
        {"name": "request", "mountPath": INPUT_DIR, "readOnly": True},
        {"name": "output", "mountPath": OUTPUT_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "request", "configMap": {"name": input_configmap_name(request)}},
    ]
    if profiling.get("outputPVC"):
        volumes.append(
            {"name": "output", "persistentVolumeClaim": {"claimName": profiling["outputPVC"]}}
        )
    else:
        volumes.append({"name": "output", "emptyDir": {}})
    ref = profiling.get("configMapRef")
    if ref:
        mounts.append({"name": "base-config", "mountPath": BASE_CONFIG_DIR, "readOnly": True})
        volumes.append({"name": "base-config", "configMap": {"name": ref["name"]}})
    container: dict[str, Any] = {
        "name": "profiler",
        "image": profiling.get("profilerImage") or config.default_image,
        "command": ["python", "-m", "dynamo.profiler.job"],
        "args": [
            "--config",
            f"{INPUT_DIR}/{INPUT_KEY}",
            "--output-dir",
            OUTPUT_DIR,
            "--output-configmap",
            output_configmap_name(request),
            "--termination-log",
            TERMINATION_LOG,
        ],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if profiling.get("resources"):
        container["resources"] = profiling["resources"]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": config.profiler_service_account or profiler_account_name(request),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    pull = _pull_secrets(body, config)
    if pull:
        pod["imagePullSecrets"] = pull
    if profiling.get("tolerations"):
        pod["tolerations"] = profiling["tolerations"]
    if profiling.get("nodeSelector"):
        pod["nodeSelector"] = profiling["nodeSelector"]
    deadline = profiling.get("activeDeadlineSeconds") or config.profiler_deadline_s
    return {
        "apiVersion": JOB_API_VERSION,
        "kind": "Job",
        "metadata": _metadata(body, job_name(request)),
        "spec": {
            "backoffLimit": config.profiler_backoff_limit,
            "activeDeadlineSeconds": int(deadline),
            "ttlSecondsAfterFinished": config.profiler_ttl_s,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def profiling_objects(body: Mapping[str, Any], config: OperatorConfig) -> list[dict[str, Any]]:
    """What starts profiling, in the order to create it (the Job last)."""
    rbac = [] if config.profiler_service_account else profiler_rbac(body)
    return [input_configmap(body), *rbac, profiling_job(body, config)]
