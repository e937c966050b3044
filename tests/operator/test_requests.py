"""The DGDR controller against the fake API server, with the real operator (kopf) running:
validation, the profiling Job, its command run as the kubelet would, the output ConfigMap,
the generated graph, Ready, DeploymentDeleted and spec changes refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from _kubelet import finish_job, pod_labels, run_job
from _operator_harness import REPO, Cluster, running_operator, validate_k8s, wait_for

from dynamo.operator.config import OperatorConfig
from dynamo.testing.kube_api import FakeKubeApi

NS = "dynamo-system"
DGDR = "DynamoGraphDeploymentRequest"
MOCKER_AGG = REPO / "examples/mocker/agg.yaml"
REQUEST: dict[str, Any] = {
    "apiVersion": "nvidia.com/v1alpha1",
    "kind": "DynamoGraphDeploymentRequest",
    "metadata": {"name": "sla"},
    "spec": {
        "model": "Qwen/Qwen3-0.6B",
        "backend": "vllm",
        "useMocker": True,
        "autoApply": True,
        "profilingConfig": {
            "profilerImage": "pydynamo/runtime:test",
            "config": {"sla": {"isl": 3000, "osl": 150, "ttft": 300, "itl": 25}},
        },
    },
}


def request(name: str = "sla", **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(REQUEST)
    body["metadata"]["name"] = name
    body["spec"].update(spec)
    return body


async def get_request(cluster: Cluster, name: str) -> dict[str, Any]:
    body = await cluster.get("DynamoGraphDeploymentRequest", name, NS)
    assert body is not None
    return body


async def wait_request(cluster: Cluster, name: str, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await get_request(cluster, name)
        return body if (body.get("status") or {}).get("state") == state else None

    return await wait_for(probe, f"DGDR {name} in state {state}")


def events(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about DGDR `name`, in creation order."""
    found = []
    for resource, _, _, body in cluster.api.live_objects():
        involved = body.get("involvedObject") or {}
        kind = involved.get("kind")
        if resource.plural == "events" and (kind, involved.get("name")) == (DGDR, name):
            found.append((body["metadata"]["resourceVersion"], body))
    found.sort(key=lambda kv: int(kv[0]))
    return [(b["type"], b["reason"], b["message"]) for _, b in found]


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    (cond,) = [c for c in body["status"]["conditions"] if c["type"] == kind]
    return dict(cond)


def graph_doc(name: str) -> dict[str, Any]:
    graph = yaml.safe_load(MOCKER_AGG.read_text())
    graph["metadata"]["name"] = name
    graph["spec"]["services"]["MockerWorker"]["extraPodSpec"]["volumeMounts"] = [
        {"name": "planner-profile-data", "mountPath": "/profile"}
    ]
    return dict(graph)


def write_outputs(out: Path) -> None:
    """What a profiling run leaves in its output directory (the files the publisher reads)."""
    profile = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "planner-profile-data"},
        "data": {"prefill_raw_data.json": "{}", "decode_raw_data.json": "{}"},
    }
    for key, graph in (
        ("config_with_planner.yaml", "sla-vllm"),
        ("mocker_config_with_planner.yaml", "sla-mocker"),
    ):
        (out / key).write_text(yaml.safe_dump_all([profile, graph_doc(graph)]))
    results = {"prefill": {"tp": 1}, "decode": {"tp": 2}}
    (out / "profiling_results.json").write_text(json.dumps(results))


async def profiled(cluster: Cluster, name: str, tmp_path: Path) -> dict[str, Any]:
    """Run the Job's publishing step in the Job's pod on outputs written by the test (the
    profiler itself is exercised in test_request_e2e), then complete the Job."""
    await wait_request(cluster, name, "Profiling")
    job = await cluster.get("Job", f"profile-{name}", NS)
    assert job is not None
    publish = ["python", "-m", "dynamo.profiler.publish", "--output-dir", "/data"]
    publish += ["--output-configmap", f"dgdr-output-{name}"]
    run = await run_job(
        cluster, job, tmp_path, command=publish, before=lambda m: write_outputs(m["/data"])
    )
    assert run.exit_code == 0, run.log
    await finish_job(cluster, job, run)
    return job


async def test_invalid_sla_fails_naming_the_field_and_the_operator_keeps_going(
    cluster: Cluster, operator: None
) -> None:
    bad = request("bad")
    bad["spec"]["profilingConfig"]["config"]["sla"]["itl"] = 0
    await cluster.apply(bad, NS)
    failed = await wait_request(cluster, "bad", "Failed")
    cond = condition(failed, "Validation")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert cond["message"] == "spec.profilingConfig.config.sla.itl: must be > 0, got 0"
    assert ("Warning", "InvalidSpec", cond["message"]) in events(cluster, "bad")
    assert await cluster.get("Job", "profile-bad", NS) is None

    no_model = request("nomodel", model="")
    await cluster.apply(no_model, NS)
    failed = await wait_request(cluster, "nomodel", "Failed")
    assert condition(failed, "Validation")["message"].startswith("spec.model: ")

    await cluster.apply(request("good"), NS)  # the operator is still at work
    await wait_request(cluster, "good", "Profiling")


async def test_a_missing_configmap_key_fails_naming_the_field(
    cluster: Cluster, operator: None
) -> None:
    base = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "base"}}
    await cluster.apply({**base, "data": {"other.yaml": "x"}}, NS)
    body = request("ref")
    body["spec"]["profilingConfig"]["configMapRef"] = {"name": "base"}
    await cluster.apply(body, NS)
    failed = await wait_request(cluster, "ref", "Failed")
    assert condition(failed, "Validation")["message"] == (
        "spec.profilingConfig.configMapRef.key: ConfigMap base has no key disagg.yaml"
    )


async def test_profiling_job_input_and_account(cluster: Cluster, operator: None) -> None:
    created = await cluster.apply(request(), NS)
    body = await wait_request(cluster, "sla", "Profiling")
    assert body["status"]["observedGeneration"] == 1
    assert body["status"]["backend"] == "vllm"
    objects = cluster.objects(NS)
    made = {key for key, obj in objects.items() if key[0] != "DynamoGraphDeploymentRequest"}
    assert made == {
        ("ConfigMap", "dgdr-input-sla"),
        ("ServiceAccount", "dgdr-profiler-sla"),
        ("Role", "dgdr-profiler-sla"),
        ("RoleBinding", "dgdr-profiler-sla"),
        ("Job", "profile-sla"),
    }
    for key in made:
        obj = objects[key]
        validate_k8s(obj)
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == (
            "DynamoGraphDeploymentRequest",
            created["metadata"]["uid"],
        )
    job = objects[("Job", "profile-sla")]
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 14400
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dgdr-profiler-sla"
    (container,) = pod["containers"]
    assert container["image"] == "pydynamo/runtime:test"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "imagePullSecrets" not in pod
    assert all(e["name"] != "HF_TOKEN" for e in container["env"])
    text = objects[("ConfigMap", "dgdr-input-sla")]["data"]["dgdr.yaml"]
    assert yaml.safe_load(text)["spec"] == REQUEST["spec"]
    assert [e[1] for e in events(cluster, "sla")] == ["Validated", "ProfilingStarted"]


async def test_a_failed_job_fails_the_request_with_the_profilers_reason(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    """The Job's own command runs; the profiler cannot read its config (the test deletes the
    request's input first), so it exits non-zero and its last line is the reason."""
    await cluster.apply(request(), NS)
    await wait_request(cluster, "sla", "Profiling")
    job = await cluster.get("Job", "profile-sla", NS)
    assert job is not None

    def lose_the_input(mounts: dict[str, Path]) -> None:
        (mounts["/etc/dgdr"] / "dgdr.yaml").unlink()

    run = await run_job(cluster, job, tmp_path, before=lose_the_input)
    assert run.exit_code != 0
    assert run.termination_message
    assert run.termination_message in run.log
    await finish_job(cluster, job, run)
    failed = await wait_request(cluster, "sla", "Failed")
    cond = condition(failed, "Profiling")
    assert (cond["status"], cond["reason"]) == ("False", "ProfilingFailed")
    assert cond["message"] == (
        "Job profile-sla failed: BackoffLimitExceeded (Job has reached the specified backoff "
        f"limit); profiler: {run.termination_message}"
    )
    assert events(cluster, "sla")[-1] == ("Warning", "ProfilingFailed", cond["message"])
    assert await cluster.get("ConfigMap", "dgdr-output-sla", NS) is None


async def test_output_to_graph_to_ready_then_deployment_deleted(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    created = await cluster.apply(request(), NS)
    await profiled(cluster, "sla", tmp_path)
    output = await cluster.get("ConfigMap", "dgdr-output-sla", NS)
    assert output is not None
    assert sorted(output["data"]) == [
        "config_with_planner.yaml",
        "mocker_config_with_planner.yaml",
        "profiling_results.json",
    ]
    assert output["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]

    deploying = await wait_request(cluster, "sla", "Deploying")
    assert deploying["status"]["profilingResults"] == "configmap/dgdr-output-sla"
    assert deploying["status"]["generatedDeployment"]["metadata"]["name"] == "sla-mocker"

    async def graph_made() -> dict[str, Any] | None:
        return await cluster.get("DynamoGraphDeployment", "sla-mocker", NS)

    graph = await wait_for(graph_made, "the generated graph")
    labels = graph["metadata"]["labels"]
    assert labels["dgdr.nvidia.com/name"] == "sla"
    assert labels["dgdr.nvidia.com/namespace"] == NS
    assert "ownerReferences" not in graph["metadata"]

    async def profile_made() -> dict[str, Any] | None:
        return await cluster.get("ConfigMap", "planner-profile-data", NS)

    profile = await wait_for(profile_made, "the planner's profile ConfigMap")
    assert profile["metadata"]["ownerReferences"][0]["uid"] == graph["metadata"]["uid"]

    for deployment in ("sla-mocker-frontend", "sla-mocker-mockerworker"):

        async def exists(name: str = deployment) -> dict[str, Any] | None:
            return await cluster.get("Deployment", name, NS)

        await wait_for(exists, f"Deployment {deployment}")
        await cluster.mark_available(deployment, NS)
    ready = await wait_request(cluster, "sla", "Ready")
    assert ready["status"]["deployment"] == {
        "name": "sla-mocker",
        "namespace": NS,
        "state": "successful",
        "created": True,
    }
    assert condition(ready, "DeploymentReady")["status"] == "True"
    assert condition(ready, "SpecGenerated")["status"] == "True"
    assert [e[1] for e in events(cluster, "sla")] == [
        "Validated",
        "ProfilingStarted",
        "ProfilingSucceeded",
        "DeploymentCreated",
        "Ready",
    ]

    # the graph degrades (a worker is no longer available), then recovers
    unavailable = {"status": {"availableReplicas": 0, "conditions": []}}
    await cluster.patch("Deployment", "sla-mocker-mockerworker", NS, unavailable, sub="status")
    degraded = await wait_request(cluster, "sla", "Deploying")
    assert condition(degraded, "DeploymentReady")["status"] == "False"
    assert events(cluster, "sla")[-1][:2] == ("Warning", "DeploymentNotReady")
    await cluster.mark_available("sla-mocker-mockerworker", NS)
    await wait_request(cluster, "sla", "Ready")

    await cluster.delete("DynamoGraphDeployment", "sla-mocker", NS)
    gone = await wait_request(cluster, "sla", "DeploymentDeleted")
    assert gone["status"]["deployment"]["state"] == "deleted"
    assert events(cluster, "sla")[-1][1] == "DeploymentDeleted"


async def test_deleting_the_request_keeps_its_graph(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    await cluster.apply(request(), NS)
    await profiled(cluster, "sla", tmp_path)
    await wait_request(cluster, "sla", "Deploying")

    async def graph_made() -> dict[str, Any] | None:
        return await cluster.get("DynamoGraphDeployment", "sla-mocker", NS)

    await wait_for(graph_made, "the generated graph")

    async def profile_made() -> dict[str, Any] | None:
        return await cluster.get("ConfigMap", "planner-profile-data", NS)

    await wait_for(profile_made, "the planner's profile ConfigMap")
    await cluster.delete("DynamoGraphDeploymentRequest", "sla", NS)

    async def collected() -> bool:
        return await cluster.get("Job", "profile-sla", NS) is None

    await wait_for(collected, "the Job to be collected")
    for name in ("dgdr-input-sla", "dgdr-output-sla"):
        assert await cluster.get("ConfigMap", name, NS) is None
    assert await cluster.get("DynamoGraphDeployment", "sla-mocker", NS) is not None
    assert await cluster.get("ConfigMap", "planner-profile-data", NS) is not None


async def test_without_auto_apply_the_spec_is_generated_only(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    await cluster.apply(request(autoApply=False, useMocker=False), NS)
    await profiled(cluster, "sla", tmp_path)
    ready = await wait_request(cluster, "sla", "Ready")
    assert ready["status"]["generatedDeployment"]["metadata"]["name"] == "sla-vllm"
    assert "deployment" not in ready["status"]
    assert await cluster.get("DynamoGraphDeployment", "sla-vllm", NS) is None


async def test_a_spec_change_during_profiling_is_refused(cluster: Cluster, operator: None) -> None:
    await cluster.apply(request(), NS)
    await wait_request(cluster, "sla", "Profiling")
    changed = await cluster.patch(
        "DynamoGraphDeploymentRequest", "sla", NS, {"spec": {"model": "other/model"}}
    )
    assert changed["metadata"]["generation"] == 2

    async def refused() -> bool:
        return any(e[1] == "SpecChangeRejected" for e in events(cluster, "sla"))

    await wait_for(refused, "the SpecChangeRejected event")
    body = await get_request(cluster, "sla")
    assert body["status"]["state"] == "Profiling"
    assert body["status"]["observedGeneration"] == 1
    (event,) = [e for e in events(cluster, "sla") if e[1] == "SpecChangeRejected"]
    assert event[0] == "Warning"
    assert "delete this DynamoGraphDeploymentRequest and create a new one" in event[2]


async def test_a_fixed_spec_after_failed_validation_is_validated_again(
    cluster: Cluster, operator: None
) -> None:
    bad = request()
    bad["spec"]["profilingConfig"]["config"]["sla"]["ttft"] = -1
    await cluster.apply(bad, NS)
    await wait_request(cluster, "sla", "Failed")
    fixed = {"spec": {"profilingConfig": {"config": {"sla": {"ttft": 300}}}}}
    await cluster.patch("DynamoGraphDeploymentRequest", "sla", NS, fixed)
    body = await wait_request(cluster, "sla", "Profiling")
    assert body["status"]["observedGeneration"] == 2
    assert condition(body, "Validation")["status"] == "True"


async def test_a_restarted_operator_adopts_the_job_and_the_graph(
    kube: FakeKubeApi, cluster: Cluster, tmp_path: Path
) -> None:
    config = OperatorConfig(health_port=0)
    async with running_operator(kube, config):
        await cluster.apply(request(), NS)
        await wait_request(cluster, "sla", "Profiling")
    job = await cluster.get("Job", "profile-sla", NS)
    assert job is not None
    async with running_operator(kube, config):
        await profiled(cluster, "sla", tmp_path)

        async def graph_made() -> dict[str, Any] | None:
            return await cluster.get("DynamoGraphDeployment", "sla-mocker", NS)

        graph = await wait_for(graph_made, "the generated graph")
    again = await cluster.get("Job", "profile-sla", NS)
    assert again is not None
    assert again["metadata"]["uid"] == job["metadata"]["uid"]
    async with running_operator(kube, config):
        await cluster.mark_available("sla-mocker-frontend", NS)
        await cluster.mark_available("sla-mocker-mockerworker", NS)
        await wait_request(cluster, "sla", "Ready")
    same = await cluster.get("DynamoGraphDeployment", "sla-mocker", NS)
    assert same is not None
    assert same["metadata"]["uid"] == graph["metadata"]["uid"]
    reasons = [e[1] for e in events(cluster, "sla")]
    assert reasons.count("ProfilingStarted") == 1
    assert reasons.count("DeploymentCreated") == 1


async def test_a_restricted_operator_profiles_only_its_namespace(
    kube: FakeKubeApi, cluster: Cluster
) -> None:
    config = OperatorConfig(namespace="team-a", health_port=0)
    async with running_operator(kube, config):
        await cluster.apply(request(), "team-b")
        elsewhere = request("elsewhere", deploymentOverrides={"namespace": "team-b"})
        await cluster.apply(elsewhere, "team-a")
        await cluster.apply(request(), "team-a")

        async def profiling() -> bool:
            body = await cluster.get("DynamoGraphDeploymentRequest", "sla", "team-a")
            return (body or {}).get("status", {}).get("state") == "Profiling"

        await wait_for(profiling, "team-a's request profiling")

        async def refused() -> dict[str, Any] | None:
            body = await cluster.get("DynamoGraphDeploymentRequest", "elsewhere", "team-a")
            state = (body or {}).get("status", {}).get("state")
            return body if state == "Failed" else None

        failed = await wait_for(refused, "the request for team-b to fail")
        assert condition(failed, "Validation")["message"] == (
            "spec.deploymentOverrides.namespace: the operator watches only namespace team-a, "
            "not team-b"
        )
    other = await cluster.get("DynamoGraphDeploymentRequest", "sla", "team-b")
    assert other is not None and "status" not in other
    assert await cluster.get("Job", "profile-sla", "team-b") is None


async def test_a_pod_that_cannot_start_is_named_while_profiling(
    cluster: Cluster, operator: None
) -> None:
    await cluster.apply(request(), NS)
    await wait_request(cluster, "sla", "Profiling")
    job = await cluster.get("Job", "profile-sla", NS)
    assert job is not None
    waiting = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "profile-sla-abcde", "labels": pod_labels(job)},
        "spec": job["spec"]["template"]["spec"],
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "profiler",
                    "ready": False,
                    "restartCount": 0,
                    "image": "pydynamo/runtime:test",
                    "imageID": "",
                    "state": {"waiting": waiting},
                }
            ],
        },
    }
    await cluster.apply(pod, NS)

    async def named() -> str | None:
        body = await get_request(cluster, "sla")
        message = condition(body, "Profiling")["message"]
        return message if "ImagePullBackOff" in message else None

    message = await wait_for(named, "the stuck pod in the Profiling condition")
    assert message == (
        "Job profile-sla is running; pod profile-sla-abcde: ImagePullBackOff: "
        "Back-off pulling image"
    )
    body = await get_request(cluster, "sla")
    assert body["status"]["state"] == "Profiling"


async def test_a_graph_of_the_same_name_not_made_by_the_request_is_not_taken(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    await cluster.apply(graph_doc("sla-mocker"), NS)
    await cluster.apply(request(), NS)
    await profiled(cluster, "sla", tmp_path)
    failed = await wait_request(cluster, "sla", "Failed")
    cond = condition(failed, "DeploymentReady")
    assert (cond["reason"], cond["message"]) == (
        "DeploymentConflict",
        f"DynamoGraphDeployment {NS}/sla-mocker exists and was not made by this request",
    )
    graph = await cluster.get("DynamoGraphDeployment", "sla-mocker", NS)
    assert graph is not None
    assert "dgdr.nvidia.com/name" not in (graph["metadata"].get("labels") or {})
