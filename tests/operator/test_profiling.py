"""The profiling Job and its inputs (pure functions): secrets and pull secrets from the spec or
the platform, deadlines, the base config mount; the profiler's output parsed into a graph."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from _operator_harness import validate_k8s

from dynamo.operator.config import OperatorConfig
from dynamo.operator.profiling import profiler_input, profiling_job, profiling_objects
from dynamo.operator.request_output import (
    MOCKER_CONFIG_KEY,
    generated_graph,
    parse_output,
    summary,
)
from dynamo.operator.request_validation import RequestFailedError

BODY: dict[str, Any] = {
    "apiVersion": "nvidia.com/v1alpha1",
    "kind": "DynamoGraphDeploymentRequest",
    "metadata": {"name": "sla", "namespace": "team", "uid": "u-1", "generation": 1},
    "spec": {
        "model": "Qwen/Qwen3-0.6B",
        "backend": "vllm",
        "profilingConfig": {"config": {"sla": {"ttft": 300, "itl": 25}}},
    },
}
GRAPH = {
    "apiVersion": "nvidia.com/v1alpha1",
    "kind": "DynamoGraphDeployment",
    "metadata": {"name": "gen"},
    "spec": {"services": {"Frontend": {"componentType": "frontend", "replicas": 1}}},
}
PROFILE = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planner-profile-data"}}


def body(**profiling: Any) -> dict[str, Any]:
    out = copy.deepcopy(BODY)
    out["spec"]["profilingConfig"].update(profiling)
    return out


def container(job: dict[str, Any]) -> dict[str, Any]:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_every_object_is_valid_kubernetes() -> None:
    objs = profiling_objects(body(configMapRef={"name": "base"}), OperatorConfig())
    assert [o["kind"] for o in objs] == [
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Job",
    ]
    for obj in objs:
        validate_k8s(obj)


def _role_rules(request: dict[str, Any]) -> list[dict[str, Any]]:
    (role,) = [o for o in profiling_objects(request, OperatorConfig()) if o["kind"] == "Role"]
    return list(role["rules"])


def test_only_a_thorough_request_may_deploy_trial_graphs() -> None:
    graphs = {
        "apiGroups": ["nvidia.com"],
        "resources": ["dynamographdeployments"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    }
    assert graphs not in _role_rules(BODY)
    thorough = copy.deepcopy(BODY)
    thorough["spec"]["profilingConfig"]["config"]["sweep"] = {"searchStrategy": "thorough"}
    rules = _role_rules(thorough)
    assert graphs in rules
    assert [r["resources"] for r in rules if r != graphs] == [["configmaps"], ["configmaps"]]
    rapid = copy.deepcopy(BODY)
    rapid["spec"]["profilingConfig"]["config"]["sweep"] = {"search_strategy": "rapid"}
    assert graphs not in _role_rules(rapid)


def test_platform_account_replaces_the_per_request_one() -> None:
    config = OperatorConfig(profiler_service_account="profiler")
    objs = profiling_objects(body(), config)
    assert [o["kind"] for o in objs] == ["ConfigMap", "Job"]
    assert objs[-1]["spec"]["template"]["spec"]["serviceAccountName"] == "profiler"


def test_hf_token_and_pull_secrets_from_the_platform_or_the_spec() -> None:
    config = OperatorConfig(
        profiler_hf_token_secret="hf:token", profiler_image_pull_secrets="regcred, other"
    )
    job = profiling_job(body(), config)
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]

    mine = body(hfTokenSecret={"name": "mine"}, imagePullSecrets=["mine", "regcred"])
    job = profiling_job(mine, config)
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "mine", "key": "HF_TOKEN"}}
    pull = job["spec"]["template"]["spec"]["imagePullSecrets"]
    assert pull == [{"name": "regcred"}, {"name": "other"}, {"name": "mine"}]


def test_deadline_image_and_scheduling_from_the_spec() -> None:
    spec = body(
        activeDeadlineSeconds=600,
        profilerImage="me/profiler:1",
        tolerations=[{"key": "gpu", "operator": "Exists"}],
        nodeSelector={"gpu": "h100"},
        resources={"limits": {"nvidia.com/gpu": "1"}},
        outputPVC="results",
    )
    job = profiling_job(spec, OperatorConfig(etcd_address="http://etcd:2379"))
    validate_k8s(job)
    assert job["spec"]["activeDeadlineSeconds"] == 600
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "results"}} in pod["volumes"]
    c = container(job)
    assert c["image"] == "me/profiler:1"
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert {"name": "ETCD_ENDPOINTS", "value": "http://etcd:2379"} in c["env"]


def test_base_config_is_mounted_and_named_as_the_engine_config() -> None:
    spec = body(configMapRef={"name": "base", "key": "disagg.yaml"})
    doc = profiler_input(spec)
    assert doc["spec"]["profilingConfig"]["config"]["engine"] == {"config": "/config/disagg.yaml"}
    assert doc["metadata"] == {"name": "sla", "namespace": "team"}
    mounts = {
        m["mountPath"]: m["name"]
        for m in container(profiling_job(spec, OperatorConfig()))["volumeMounts"]
    }
    assert mounts == {"/etc/dgdr": "request", "/data": "output", "/config": "base-config"}


def test_output_is_split_and_the_graph_gets_overrides_and_labels() -> None:
    data = {MOCKER_CONFIG_KEY: yaml.safe_dump_all([PROFILE, GRAPH])}
    output = parse_output(data, MOCKER_CONFIG_KEY, "ConfigMap out")
    assert [e["metadata"]["name"] for e in output.extras] == ["planner-profile-data"]
    spec = body()
    spec["spec"]["deploymentOverrides"] = {
        "name": "mine",
        "labels": {"team": "a"},
        "workersImage": "img:2",
    }
    graph = generated_graph(spec, output)
    assert graph["metadata"]["name"] == "mine"
    assert graph["metadata"]["namespace"] == "team"
    assert graph["metadata"]["labels"] == {
        "team": "a",
        "dgdr.nvidia.com/name": "sla",
        "dgdr.nvidia.com/namespace": "team",
        "nvidia.com/managed-by": "dynamo-operator",
    }
    frontend = graph["spec"]["services"]["Frontend"]
    assert frontend["extraPodSpec"]["mainContainer"]["image"] == "img:2"


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([PROFILE], "ConfigMap out key mocker_config_with_planner.yaml: 0 DynamoGraphDeployments"),
        ([GRAPH, GRAPH], "ConfigMap out key mocker_config_with_planner.yaml: 2 Dynamo"),
        ([{"kind": "Secret"}, GRAPH], "unexpected kinds ['Secret']"),
        (
            [{**GRAPH, "spec": {"services": {"F": {"replicas": -1}}}}],
            "invalid graph: spec.services.F.replicas",
        ),
    ],
)
def test_bad_output_fails_naming_the_key(docs: list[dict[str, Any]], message: str) -> None:
    data = {MOCKER_CONFIG_KEY: yaml.safe_dump_all(docs)}
    with pytest.raises(RequestFailedError) as caught:
        parse_output(data, MOCKER_CONFIG_KEY, "ConfigMap out")
    assert message in str(caught.value)
    assert caught.value.condition == "SpecGenerated"


def test_missing_key_is_named() -> None:
    with pytest.raises(RequestFailedError) as caught:
        parse_output({}, MOCKER_CONFIG_KEY, "ConfigMap out")
    assert str(caught.value) == "ConfigMap out has no key mocker_config_with_planner.yaml"


def test_summary_of_the_chosen_engines() -> None:
    selected = {
        "prefill": {"tensorParallelSize": 2, "ttftMs": 65.84},
        "decode": {"tensorParallelSize": 1, "itlMs": 19.83, "concurrency": 103},
    }
    assert summary({"meetsSla": True, "selected": selected}) == (
        "prefill TP2 (TTFT 65.8 ms), decode TP1 (ITL 19.8 ms at concurrency 103)"
    )
    assert summary({"meetsSla": False, "selected": selected}).endswith(
        ", closest to the SLA, which nothing met"
    )
    assert summary(None) == ""
    assert summary({"selected": "?"}) == ""
