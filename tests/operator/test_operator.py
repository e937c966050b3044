"""The real operator (kopf, in-process) against the fake API server: what it creates for the
guide's DGD and every example, scaling, updates, pruning, deletion and invalid input."""

from __future__ import annotations

import copy
from typing import Any

from _operator_harness import (
    GUIDE_DGD,
    REPO,
    Cluster,
    load_yaml,
    running_operator,
    validate_k8s,
    wait_for,
)

from dynamo.operator.config import OperatorConfig
from dynamo.operator.manifests import build_manifests
from dynamo.testing.kube_api import FakeKubeApi

NS = "dynamo-system"
EXAMPLES = sorted(  # graphs only: DGDR examples are tested in test_request_e2e
    p
    for p in (REPO / "examples").glob("*/*.yaml")
    if load_yaml(p)["kind"] == "DynamoGraphDeployment"
)
GRAPH_KEYS = {
    ("Deployment", "my-llm-frontend"),
    ("Deployment", "my-llm-vllmdecodeworker"),
    ("Service", "my-llm-frontend"),
    ("Service", "my-llm-vllmdecodeworker"),
    ("Service", "my-llm-dynamo-discovery"),
    ("ServiceAccount", "my-llm-k8s-service-discovery"),
    ("Role", "my-llm-k8s-service-discovery-role"),
    ("RoleBinding", "my-llm-k8s-service-discovery-binding"),
}


async def _wait_keys(cluster: Cluster, ns: str, keys: set[tuple[str, str]]) -> None:
    async def probe() -> bool:
        return keys <= set(cluster.objects(ns))

    await wait_for(probe, f"objects {sorted(keys)} in {ns}")


def _main(dep: dict[str, Any]) -> dict[str, Any]:
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def _env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _main(dep)["env"]}


async def _deploy_guide(cluster: Cluster) -> dict[str, Any]:
    created = await cluster.apply(load_yaml(GUIDE_DGD), NS)
    await _wait_keys(cluster, NS, GRAPH_KEYS)
    await cluster.wait_state("my-llm", NS, "pending")
    return created


async def test_guide_dgd_creates_its_objects_and_becomes_successful(
    cluster: Cluster, operator: None
) -> None:
    created = await _deploy_guide(cluster)
    objects = cluster.objects(NS)
    assert set(objects) == GRAPH_KEYS | {("DynamoGraphDeployment", "my-llm")}
    uid = created["metadata"]["uid"]
    for key in GRAPH_KEYS:
        obj = objects[key]
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["kind"], owner["controller"]) == (
            uid,
            "DynamoGraphDeployment",
            True,
        )
        validate_k8s(obj)
    worker = objects[("Deployment", "my-llm-vllmdecodeworker")]
    assert _env(worker)["DYN_NAMESPACE"] == "dynamo-system-my-llm"
    assert _main(worker)["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    frontend_svc = objects[("Service", "my-llm-frontend")]
    assert frontend_svc["spec"]["ports"][0]["port"] == 8000

    pending = await cluster.dgd_status("my-llm", NS)
    assert pending["conditions"][0]["reason"] == "some_resources_are_not_ready"
    await cluster.mark_available("my-llm-frontend", NS)
    await cluster.mark_available("my-llm-vllmdecodeworker", NS)
    done = await cluster.wait_state("my-llm", NS, "successful")
    assert done["conditions"][0]["status"] == "True"
    assert done["conditions"][0]["reason"] == "all_resources_are_ready"
    assert done["services"]["VllmDecodeWorker"]["readyReplicas"] == 1
    assert done["services"]["Frontend"]["componentName"] == "my-llm-frontend"


async def test_every_example_is_deployed(cluster: Cluster, operator: None) -> None:
    assert EXAMPLES
    expected: dict[str, set[tuple[str, str]]] = {}
    for i, path in enumerate(EXAMPLES):
        ns = f"ex-{i}"
        created = await cluster.apply(load_yaml(path), ns)
        manifests = build_manifests(created, OperatorConfig())
        expected[ns] = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects}
    for i, path in enumerate(EXAMPLES):
        ns = f"ex-{i}"
        await _wait_keys(cluster, ns, expected[ns])
        name = load_yaml(path)["metadata"]["name"]
        objects = cluster.objects(ns)
        for key in expected[ns]:
            validate_k8s(objects[key])
        for kind, obj_name in expected[ns]:
            if kind == "Deployment":
                await cluster.mark_available(obj_name, ns)
        status = await cluster.wait_state(name, ns, "successful")
        assert set(status["services"]) == set(load_yaml(path)["spec"]["services"]), path


async def test_scaling_a_service_scales_its_deployment(cluster: Cluster, operator: None) -> None:
    await _deploy_guide(cluster)
    await cluster.mark_available("my-llm-frontend", NS)
    await cluster.mark_available("my-llm-vllmdecodeworker", NS)
    await cluster.wait_state("my-llm", NS, "successful")

    patch = {"spec": {"services": {"VllmDecodeWorker": {"replicas": 3}}}}
    await cluster.patch("DynamoGraphDeployment", "my-llm", NS, patch)

    async def scaled() -> bool:
        dep = await cluster.get("Deployment", "my-llm-vllmdecodeworker", NS)
        return bool(dep and dep["spec"]["replicas"] == 3)

    await wait_for(scaled, "the worker Deployment at 3 replicas")
    status = await cluster.wait_state("my-llm", NS, "pending")
    assert "VllmDecodeWorker" in status["conditions"][0]["message"]
    await cluster.mark_available("my-llm-vllmdecodeworker", NS)
    done = await cluster.wait_state("my-llm", NS, "successful")
    assert done["services"]["VllmDecodeWorker"]["availableReplicas"] == 3


async def test_image_args_and_env_updates_are_reconciled(cluster: Cluster, operator: None) -> None:
    doc = load_yaml(GUIDE_DGD)
    doc["spec"]["services"]["VllmDecodeWorker"]["envs"] = [{"name": "OLD", "value": "1"}]
    await cluster.apply(doc, NS)
    await _wait_keys(cluster, NS, GRAPH_KEYS)
    worker = doc["spec"]["services"]["VllmDecodeWorker"]
    worker["envs"] = [{"name": "NEW", "value": "2"}]
    main = worker["extraPodSpec"]["mainContainer"]
    main["image"] = "registry.local/vllm:2"
    main["args"] = ["python3 -m dynamo.vllm --model Qwen/Qwen3-0.6B"]
    await cluster.patch("DynamoGraphDeployment", "my-llm", NS, {"spec": doc["spec"]})

    async def updated() -> dict[str, Any] | None:
        dep = await cluster.get("Deployment", "my-llm-vllmdecodeworker", NS)
        return dep if dep and _main(dep)["image"] == "registry.local/vllm:2" else None

    dep = await wait_for(updated, "the new worker image")
    assert _main(dep)["args"] == ["python3 -m dynamo.vllm --model Qwen/Qwen3-0.6B"]
    env = _env(dep)
    assert env["NEW"] == "2"
    assert "OLD" not in env
    validate_k8s(dep)


async def test_a_removed_service_is_pruned(cluster: Cluster, operator: None) -> None:
    await _deploy_guide(cluster)
    patch = {"spec": {"services": {"VllmDecodeWorker": None}}}
    await cluster.patch("DynamoGraphDeployment", "my-llm", NS, patch)

    async def pruned() -> bool:
        keys = set(cluster.objects(NS))
        return ("Deployment", "my-llm-vllmdecodeworker") not in keys and (
            "Service",
            "my-llm-vllmdecodeworker",
        ) not in keys

    await wait_for(pruned, "the worker's Deployment and Service to go")
    assert ("Deployment", "my-llm-frontend") in cluster.objects(NS)


async def test_deleting_the_dgd_collects_every_child(cluster: Cluster, operator: None) -> None:
    await _deploy_guide(cluster)
    await cluster.delete("DynamoGraphDeployment", "my-llm", NS)

    async def gone() -> bool:
        return not cluster.objects(NS)

    await wait_for(gone, "every object of the graph to be garbage-collected")


async def test_invalid_dgd_fails_naming_the_field_and_the_operator_keeps_going(
    cluster: Cluster, operator: None
) -> None:
    bad = load_yaml(GUIDE_DGD)
    bad["metadata"]["name"] = "broken"
    bad["spec"]["services"]["VllmDecodeWorker"]["replicas"] = "two"
    await cluster.apply(bad, NS)
    status = await cluster.wait_state("broken", NS, "failed")
    (cond,) = status["conditions"]
    assert cond["reason"] == "ValidationFailed"
    assert cond["message"].startswith("spec.services.VllmDecodeWorker.replicas:")
    assert not [k for k in cluster.objects(NS) if k[0] != "DynamoGraphDeployment"]

    await _deploy_guide(cluster)  # the operator still works

    fix = {"spec": {"services": {"VllmDecodeWorker": {"replicas": 1}}}}
    await cluster.patch("DynamoGraphDeployment", "broken", NS, fix)
    fixed = await cluster.wait_state("broken", NS, "pending")
    assert set(fixed["services"]) == {"Frontend", "VllmDecodeWorker"}


async def test_resume_recreates_what_went_missing(kube: FakeKubeApi, cluster: Cluster) -> None:
    async with running_operator(kube):
        await _deploy_guide(cluster)
    await cluster.delete("Deployment", "my-llm-frontend", NS)
    assert ("Deployment", "my-llm-frontend") not in cluster.objects(NS)
    async with running_operator(kube):
        await _wait_keys(cluster, NS, GRAPH_KEYS)


async def test_status_changes_follow_the_workloads(cluster: Cluster, operator: None) -> None:
    await _deploy_guide(cluster)
    await cluster.mark_available("my-llm-frontend", NS)
    await cluster.mark_available("my-llm-vllmdecodeworker", NS)
    await cluster.wait_state("my-llm", NS, "successful")
    lost = {"status": {"availableReplicas": 0, "readyReplicas": 0}}
    dep = await cluster.get("Deployment", "my-llm-vllmdecodeworker", NS)
    assert dep is not None
    conditions = copy.deepcopy(dep["status"]["conditions"])
    conditions[0]["status"] = "False"
    lost["status"]["conditions"] = conditions  # type: ignore[assignment]
    await cluster.patch("Deployment", "my-llm-vllmdecodeworker", NS, lost, sub="status")
    status = await cluster.wait_state("my-llm", NS, "pending")
    assert status["conditions"][0]["message"] == (
        "Resources not ready: VllmDecodeWorker: 0/1 replicas available"
    )
