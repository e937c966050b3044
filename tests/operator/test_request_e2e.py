"""DGDR to a Ready graph on the fake API server with the real profiler: the operator makes the
Job, the Job's own command (`python -m dynamo.profiler.job`: rapid profiling, then publishing)
runs as the kubelet would, the operator reads the output ConfigMap, creates the graph, and the
request is Ready once the graph's Deployments are. An SLA nothing meets fails the request with
the profiler's reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from _kubelet import finish_job, run_job
from _operator_harness import REPO, Cluster, wait_for
from test_requests import NS, condition, events, wait_request

from dynamo.deploy.dgdr import load_request
from dynamo.deploy.graph import load_graph

EXAMPLE = REPO / "examples/mocker/dgdr.yaml"


def small_request(name: str, **sla: float) -> dict[str, Any]:
    """The example request with a cheaper sweep: short prompts, TP 1 only, few points."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["name"] = name
    config = body["spec"]["profilingConfig"]["config"]
    config["sla"].update({"isl": 500, "osl": 20, **sla})
    config["hardware"]["maxNumGpusPerEngine"] = 1
    config["sweep"] = {"prefillInterpolationGranularity": 2, "decodeInterpolationGranularity": 2}
    config["engine"] = {"maxContextLength": 1000}
    return dict(body)


async def test_dgdr_job_output_graph_ready(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    await cluster.apply(small_request("qwen"), NS)
    await wait_request(cluster, "qwen", "Profiling")
    job = await cluster.get("Job", "profile-qwen", NS)
    assert job is not None
    run = await run_job(cluster, job, tmp_path)
    assert run.exit_code == 0, run.log
    assert "published ConfigMap dynamo-system/dgdr-output-qwen" in run.log
    assert (run.mounts["/data"] / "selected_decode_interpolation/raw_data.npz").is_file()
    await finish_job(cluster, job, run)

    deploying = await wait_request(cluster, "qwen", "Deploying")
    generated = deploying["status"]["generatedDeployment"]
    load_graph(generated)  # valid against our CRD model
    name = generated["metadata"]["name"]
    services = generated["spec"]["services"]
    assert {s["componentType"] for s in services.values()} >= {"frontend", "worker", "planner"}

    async def graph_made() -> dict[str, Any] | None:
        return await cluster.get("DynamoGraphDeployment", name, NS)

    await wait_for(graph_made, "the generated graph")

    async def profile_made() -> dict[str, Any] | None:
        return await cluster.get("ConfigMap", "planner-profile-data", NS)

    profile = await wait_for(profile_made, "the planner's profile ConfigMap")
    assert "prefill_raw_data.json" in profile["data"]
    for service in services:
        deployment = f"{name}-{service.lower()}"

        async def exists(d: str = deployment) -> dict[str, Any] | None:
            return await cluster.get("Deployment", d, NS)

        await wait_for(exists, f"Deployment {deployment}")
        await cluster.mark_available(deployment, NS)
    ready = await wait_request(cluster, "qwen", "Ready")
    assert ready["status"]["deployment"]["state"] == "successful"
    checked = load_request(ready)  # the status fits the CRD's schema (our model of it)
    assert checked.status is not None
    assert {c.type for c in checked.status.conditions} == {
        "Validation",
        "Profiling",
        "SpecGenerated",
        "DeploymentReady",
    }
    assert condition(ready, "Profiling")["status"] == "True"
    generated_message = condition(ready, "SpecGenerated")["message"]
    assert generated_message.startswith(
        f"graph {NS}/{name} from mocker_config_with_planner.yaml: prefill TP1 (TTFT "
    )
    assert ", decode TP1 (ITL " in generated_message
    assert [e[1] for e in events(cluster, "qwen")] == [
        "Validated",
        "ProfilingStarted",
        "ProfilingSucceeded",
        "DeploymentCreated",
        "Ready",
    ]


async def test_an_sla_nothing_meets_fails_with_the_profilers_reason(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    await cluster.apply(small_request("tight", ttft=0.5, itl=0.1), NS)
    await wait_request(cluster, "tight", "Profiling")
    job = await cluster.get("Job", "profile-tight", NS)
    assert job is not None
    run = await run_job(cluster, job, tmp_path)
    assert run.exit_code != 0
    assert "\n" not in run.termination_message
    await finish_job(cluster, job, run)
    failed = await wait_request(cluster, "tight", "Failed")
    load_request(failed)
    message = condition(failed, "Profiling")["message"]
    assert message.endswith(f"; profiler: {run.termination_message}")
    assert "TTFT" in run.termination_message
    assert await cluster.get("ConfigMap", "dgdr-output-tight", NS) is None
    # the operator keeps going
    await cluster.apply(small_request("next"), NS)
    await wait_request(cluster, "next", "Profiling")


async def test_a_thorough_request_fails_naming_the_trial_that_never_got_ready(
    cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    """In the pod the profiler deploys trial DGDs (`--deploy-target auto`); the operator
    reconciles the trial, nothing makes its Deployments available, the profiler gives up
    after `deploymentTimeout`, deletes the trial and the request fails with its reason."""
    body = small_request("thor")
    config = body["spec"]["profilingConfig"]["config"]
    config["sweep"]["searchStrategy"] = "thorough"
    config["deployment"] = {"deploymentTimeout": 5}
    await cluster.apply(body, NS)
    await wait_request(cluster, "thor", "Profiling")
    role = await cluster.get("Role", "dgdr-profiler-thor", NS)
    assert role is not None
    assert {
        "apiGroups": ["nvidia.com"],
        "resources": ["dynamographdeployments"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    } in role["rules"]
    job = await cluster.get("Job", "profile-thor", NS)
    assert job is not None
    run = await run_job(cluster, job, tmp_path)
    assert run.exit_code != 0, run.log
    assert f"created DynamoGraphDeployment {NS}/thor-trial-tp1" in run.log
    assert f"deleted DynamoGraphDeployment {NS}/thor-trial-tp1" in run.log
    assert run.termination_message.startswith(
        f"python -m dynamo.profiler: DynamoGraphDeployment {NS}/thor-trial-tp1 was not ready "
        "after 5 s (deployment.deploymentTimeout); last status: state pending"
    ), run.termination_message
    assert await cluster.get("DynamoGraphDeployment", "thor-trial-tp1", NS) is None
    await finish_job(cluster, job, run)
    failed = await wait_request(cluster, "thor", "Failed")
    assert "thor-trial-tp1 was not ready" in condition(failed, "Profiling")["message"]
