"""The Grove path: with Grove enabled a graph is one PodCliqueSet (cliques per service,
`ldr`/`wkr` cliques and a scaling group per multinode service), checked against Grove's CRD
schema; against the fake API server the operator scales Grove's children and follows their
readiness."""

from __future__ import annotations

import copy
import shlex
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _operator_harness import REPO, Cluster, load_yaml, running_operator, validate_k8s, wait_for

from dynamo.operator.config import OperatorConfig
from dynamo.operator.grove import ENABLE_GROVE_ANNOTATION
from dynamo.operator.manifests import build_manifests
from dynamo.runtime.errors import ConfigError
from dynamo.testing.kube_api import FakeKubeApi

NS = "llm"
GROVE = OperatorConfig(health_port=0, grove_enabled=True)
VLLM = REPO / "examples" / "vllm" / "multinode" / "agg.yaml"
SGLANG = REPO / "examples" / "sglang" / "multinode" / "agg.yaml"
LEADER = "$(GROVE_PCSG_NAME)-$(GROVE_PCSG_INDEX)-sglangworker-ldr-0.$(GROVE_HEADLESS_SERVICE)"


def _body(path: Any) -> dict[str, Any]:
    doc = load_yaml(path)
    doc["metadata"] |= {"namespace": NS, "uid": "u-1", "generation": 1}
    return doc


def _objects(doc: dict[str, Any], config: OperatorConfig = GROVE) -> dict[tuple[str, str], Any]:
    return {(o["kind"], o["metadata"]["name"]): o for o in build_manifests(doc, config).objects}


def _cliques(pcs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pcs["spec"]["template"]["cliques"]}


def test_a_graph_is_one_pod_clique_set() -> None:
    objs = _objects(_body(SGLANG))
    assert not {k for k in objs if k[0] in ("Deployment", "LeaderWorkerSet")}
    pcs = objs[("PodCliqueSet", "sglang-multinode")]
    validate_k8s(pcs)
    assert pcs["spec"]["replicas"] == 1
    template = pcs["spec"]["template"]
    assert template["cliqueStartupType"] == "CliqueStartupTypeAnyOrder"
    assert template["headlessServiceConfig"] == {"publishNotReadyAddresses": True}
    assert template["terminationDelay"] == "15m"
    cliques = _cliques(pcs)
    assert set(cliques) == {"frontend", "sglangworker-ldr", "sglangworker-wkr"}
    assert cliques["frontend"]["spec"]["replicas"] == 1
    assert cliques["frontend"]["labels"]["nvidia.com/selector"] == "sglang-multinode-frontend"
    assert template["podCliqueScalingGroups"] == [
        {
            "name": "sglangworker",
            "cliqueNames": ["sglangworker-ldr", "sglangworker-wkr"],
            "replicas": 1,
            "minAvailable": 1,
        }
    ]
    # The frontend Service still selects the frontend's pods (Grove copies clique labels).
    assert ("Service", "sglang-multinode-frontend") in objs


def test_leader_and_worker_cliques_get_their_ranks() -> None:
    cliques = _cliques(_objects(_body(SGLANG))[("PodCliqueSet", "sglang-multinode")])
    leader, worker = cliques["sglangworker-ldr"], cliques["sglangworker-wkr"]
    assert (leader["spec"]["replicas"], leader["spec"]["minAvailable"]) == (1, 1)
    assert (worker["spec"]["replicas"], worker["spec"]["minAvailable"]) == (1, 1)
    assert (leader["labels"]["role"], worker["labels"]["role"]) == ("leader", "worker")
    lead_main = leader["spec"]["podSpec"]["containers"][0]
    work_main = worker["spec"]["podSpec"]["containers"][0]
    [lead_script], [work_script] = lead_main["args"], work_main["args"]
    assert lead_script.startswith(
        f"python3 -m dynamo.sglang --nnodes 2 --node-rank 0 --dist-init-addr '{LEADER}:29500' "
    )
    assert work_script.startswith(
        'python3 -m dynamo.sglang --nnodes 2 --node-rank "$((GROVE_PCLQ_POD_INDEX + 1))" '
        f"--dist-init-addr '{LEADER}:29500' "
    )
    assert shlex.split(work_script)[6] == "$((GROVE_PCLQ_POD_INDEX + 1))"
    assert "readinessProbe" in lead_main and "readinessProbe" not in work_main


def test_worker_clique_gang_size_follows_node_count() -> None:
    doc = _body(VLLM)
    doc["spec"]["services"]["VllmWorker"]["multinode"]["nodeCount"] = 4
    doc["spec"]["services"]["VllmWorker"]["replicas"] = 2
    pcs = _objects(doc)[("PodCliqueSet", "vllm-multinode")]
    worker = _cliques(pcs)["vllmworker-wkr"]
    assert (worker["spec"]["replicas"], worker["spec"]["minAvailable"]) == (3, 3)
    assert "--headless" in worker["spec"]["podSpec"]["containers"][0]["args"][0]
    assert pcs["spec"]["template"]["podCliqueScalingGroups"][0]["replicas"] == 2
    validate_k8s(pcs)


def test_the_annotation_opts_a_graph_out_of_grove() -> None:
    doc = _body(VLLM)
    doc["metadata"]["annotations"] = {ENABLE_GROVE_ANNOTATION: "false"}
    with pytest.raises(ConfigError, match="no multinode orchestrator available"):
        build_manifests(doc, GROVE)
    objs = _objects(doc, OperatorConfig(grove_enabled=True, lws_enabled=True))
    assert ("LeaderWorkerSet", "vllm-multinode-vllmworker") in objs
    assert not [k for k in objs if k[0] == "PodCliqueSet"]


def test_grove_name_limit() -> None:
    doc = _body(VLLM)
    doc["metadata"]["name"] = "a-rather-long-graph-name"
    with pytest.raises(ConfigError) as err:
        build_manifests(doc, GROVE)
    assert str(err.value) == (
        "spec.services.VllmWorker: its Grove names (graph, service and, when multinode, "
        "leader clique) take 48 characters; Grove allows 45: shorten the graph or service name"
    )


@pytest.fixture
async def grove_operator(kube: FakeKubeApi, cluster: Cluster) -> AsyncIterator[None]:
    async with running_operator(kube, GROVE):
        yield


async def _grove_makes(cluster: Cluster, kind: str, name: str, replicas: int) -> None:
    """Play Grove: create a child of the PodCliqueSet (labels copied from the clique)."""
    obj = {
        "apiVersion": "grove.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "labels": {"nvidia.com/dynamo-graph-deployment-name": "vllm-multinode"},
        },
        "spec": {"replicas": replicas},
    }
    await cluster.apply(obj, NS, manager="grove-operator")


async def _grove_reports(cluster: Cluster, kind: str, name: str, status: dict[str, int]) -> None:
    await cluster.patch(kind, name, NS, {"status": status}, sub="status", manager="grove")


async def test_status_and_scaling_through_grove_children(
    cluster: Cluster, grove_operator: None
) -> None:
    await cluster.apply(load_yaml(VLLM), NS)
    await cluster.wait_state("vllm-multinode", NS, "pending")
    assert ("PodCliqueSet", "vllm-multinode") in cluster.objects(NS)
    await _grove_makes(cluster, "PodClique", "vllm-multinode-0-frontend", 1)
    await _grove_makes(cluster, "PodCliqueScalingGroup", "vllm-multinode-0-vllmworker", 1)
    await _grove_reports(cluster, "PodClique", "vllm-multinode-0-frontend", {"readyReplicas": 1})
    await _grove_reports(
        cluster,
        "PodCliqueScalingGroup",
        "vllm-multinode-0-vllmworker",
        {"availableReplicas": 0},
    )
    waiting = "Resources not ready: VllmWorker: 0/1 groups available"

    async def only_the_group_waits() -> bool:
        status = await cluster.dgd_status("vllm-multinode", NS)
        return status["conditions"][0]["message"] == waiting

    await wait_for(only_the_group_waits, "the DGD waiting for its scaling group only")
    await _grove_reports(
        cluster,
        "PodCliqueScalingGroup",
        "vllm-multinode-0-vllmworker",
        {"availableReplicas": 1},
    )
    # The PCSG is not watched (PodCliques are): a PodClique event refreshes the graph.
    await _grove_reports(
        cluster, "PodClique", "vllm-multinode-0-frontend", {"readyReplicas": 1, "replicas": 1}
    )
    done = await cluster.wait_state("vllm-multinode", NS, "successful")
    assert done["services"]["VllmWorker"]["componentKind"] == "PodCliqueScalingGroup"

    # Scaling the DGD reaches Grove's child, which Grove owns once it exists.
    await cluster.patch(
        "DynamoGraphDeployment",
        "vllm-multinode",
        NS,
        {"spec": {"services": {"VllmWorker": {"replicas": 2}}}},
    )

    async def child_scaled() -> bool:
        pcsg = await cluster.get("PodCliqueScalingGroup", "vllm-multinode-0-vllmworker", NS)
        return (pcsg or {}).get("spec", {}).get("replicas") == 2

    await wait_for(child_scaled, "the scaling group at 2 replicas")
    pcs = await cluster.get("PodCliqueSet", "vllm-multinode", NS)
    assert pcs is not None
    assert pcs["spec"]["template"]["podCliqueScalingGroups"][0]["replicas"] == 2


def test_grove_pcs_of_a_single_node_graph() -> None:
    doc = copy.deepcopy(_body(VLLM))
    del doc["spec"]["services"]["VllmWorker"]["multinode"]
    pcs = _objects(doc)[("PodCliqueSet", "vllm-multinode")]
    assert set(_cliques(pcs)) == {"frontend", "vllmworker"}
    assert "podCliqueScalingGroups" not in pcs["spec"]["template"]
    validate_k8s(pcs)
