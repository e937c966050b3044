"""Multinode services on the operator: the LeaderWorkerSet of each example (leader and worker
commands with their ranks and the leader's address), the graphs it refuses, and the DGD status
following the LWS's readiness, against the fake API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from _operator_harness import REPO, Cluster, load_yaml, running_operator, validate_k8s, wait_for

from dynamo.operator.config import OperatorConfig
from dynamo.operator.manifests import NO_ORCHESTRATOR, build_manifests
from dynamo.runtime.errors import ConfigError
from dynamo.testing.kube_api import FakeKubeApi

NS = "llm"
LWS = OperatorConfig(health_port=0, lws_enabled=True)
VLLM = REPO / "examples" / "vllm" / "multinode" / "agg.yaml"
SGLANG = REPO / "examples" / "sglang" / "multinode" / "agg.yaml"
HOST = "$(LWS_LEADER_ADDRESS)"


def _body(path: Any) -> dict[str, Any]:
    doc = load_yaml(path)
    doc["metadata"] |= {"namespace": NS, "uid": "u-1", "generation": 1}
    return doc


def _lws(doc: dict[str, Any], config: OperatorConfig = LWS) -> dict[str, Any]:
    [lws] = [o for o in build_manifests(doc, config).objects if o["kind"] == "LeaderWorkerSet"]
    return lws


def _main(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["spec"]["containers"][0])


def test_vllm_group_leader_serves_and_worker_runs_headless() -> None:
    lws = _lws(_body(VLLM))
    validate_k8s(lws)
    assert lws["metadata"]["name"] == "vllm-multinode-vllmworker"
    spec = lws["spec"]
    assert spec["replicas"] == 1 and spec["startupPolicy"] == "LeaderCreated"
    group = spec["leaderWorkerTemplate"]
    assert group["size"] == 2
    leader, worker = _main(group["leaderTemplate"]), _main(group["workerTemplate"])
    assert leader["args"] == [
        "python3 -m dynamo.vllm --nnodes 2 --node-rank 0 "
        f"--master-addr '{HOST}' --model meta-llama/Llama-3.3-70B-Instruct "
        "--tensor-parallel-size 16"
    ]
    assert worker["args"] == [
        "python3 -m dynamo.vllm --nnodes 2 --node-rank '$(LWS_WORKER_INDEX)' "
        f"--master-addr '{HOST}' --headless --model meta-llama/Llama-3.3-70B-Instruct "
        "--tensor-parallel-size 16"
    ]
    # GPUs are per node: every pod of the group asks for the service's limit.
    assert leader["resources"] == worker["resources"] == {"limits": {"nvidia.com/gpu": "8"}}
    assert leader["readinessProbe"]["httpGet"]["path"] == "/health"
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(worker)
    roles = [group[t]["metadata"]["labels"]["role"] for t in ("leaderTemplate", "workerTemplate")]
    assert roles == ["leader", "worker"]
    env = {e["name"] for e in worker["env"]}
    assert {"DYN_NAMESPACE", "DYN_SYSTEM_PORT"} <= env


def test_sglang_group_ranks_and_dist_init_addr() -> None:
    group = _lws(_body(SGLANG))["spec"]["leaderWorkerTemplate"]
    leader, worker = _main(group["leaderTemplate"]), _main(group["workerTemplate"])
    [leader_script], [worker_script] = leader["args"], worker["args"]
    assert leader_script.startswith(
        f"python3 -m dynamo.sglang --nnodes 2 --node-rank 0 --dist-init-addr '{HOST}:29500' "
    )
    assert worker_script.startswith(
        "python3 -m dynamo.sglang --nnodes 2 --node-rank '$(LWS_WORKER_INDEX)' "
        f"--dist-init-addr '{HOST}:29500' --model-path meta-llama/Llama-3.3-70B-Instruct"
    )


def test_only_the_leader_is_behind_the_service() -> None:
    objs = {
        (o["kind"], o["metadata"]["name"]): o for o in build_manifests(_body(VLLM), LWS).objects
    }
    svc = objs[("Service", "vllm-multinode-vllmworker")]
    assert svc["spec"]["selector"]["role"] == "leader"


def test_without_lws_a_multinode_graph_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        build_manifests(_body(VLLM), OperatorConfig())
    assert str(err.value) == (
        f"spec.services.VllmWorker.multinode: {NO_ORCHESTRATOR}: install "
        "LeaderWorkerSet or Grove and set dynamo-operator.orchestrators.lws.enabled or "
        ".grove.enabled (DYN_OPERATOR_LWS_ENABLED, DYN_OPERATOR_GROVE_ENABLED)"
    )


@pytest.fixture
async def lws_operator(kube: FakeKubeApi, cluster: Cluster) -> AsyncIterator[None]:
    async with running_operator(kube, LWS):
        yield


async def _mark_lws_ready(cluster: Cluster, name: str, ready: int) -> None:
    status = {
        "replicas": 1,
        "readyReplicas": ready,
        "conditions": [{"type": "Available", "status": "True" if ready else "False"}],
    }
    await cluster.patch(
        "LeaderWorkerSet", name, NS, {"status": status}, sub="status", manager="lws-controller"
    )


async def test_status_follows_the_groups_readiness(cluster: Cluster, lws_operator: None) -> None:
    await cluster.apply(load_yaml(VLLM), NS)
    await cluster.wait_state("vllm-multinode", NS, "pending")
    objects = cluster.objects(NS)
    assert ("LeaderWorkerSet", "vllm-multinode-vllmworker") in objects
    assert ("Deployment", "vllm-multinode-vllmworker") not in objects
    await cluster.mark_available("vllm-multinode-frontend", NS)
    waiting = "Resources not ready: VllmWorker: 0/1 groups ready"

    async def only_the_group_waits() -> bool:
        status = await cluster.dgd_status("vllm-multinode", NS)
        return status["conditions"][0]["message"] == waiting

    await wait_for(only_the_group_waits, "the DGD waiting for its LWS group only")
    await _mark_lws_ready(cluster, "vllm-multinode-vllmworker", 1)
    done = await cluster.wait_state("vllm-multinode", NS, "successful")
    assert done["services"]["VllmWorker"]["readyReplicas"] == 1


async def test_no_orchestrator_fails_the_graph(cluster: Cluster, operator: None) -> None:
    await cluster.apply(load_yaml(SGLANG), NS)
    status = await cluster.wait_state("sglang-multinode", NS, "failed")
    [cond] = status["conditions"]
    assert cond["reason"] == "ValidationFailed"
    assert NO_ORCHESTRATOR in cond["message"]
    assert ("LeaderWorkerSet", "sglang-multinode-sglangworker") not in cluster.objects(NS)
