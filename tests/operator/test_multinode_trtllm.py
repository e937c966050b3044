"""Multi-node TensorRT-LLM on the operator (MPI over SSH): the LeaderWorkerSet and Grove pod
templates of the example (leader's mpirun over every pod of the group, workers running sshd,
the SSH key Secret mounted), and the graph's life against the fake API server: failed with a
message naming the missing value or Secret, deployed once the Secret exists."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _operator_harness import REPO, Cluster, load_yaml, running_operator, validate_k8s, wait_for

from dynamo.deploy.multinode_mpi import SSH_KEY_MOUNT
from dynamo.operator.config import OperatorConfig
from dynamo.operator.manifests import build_manifests
from dynamo.operator.mpi import SSH_KEY_VOLUME
from dynamo.runtime.errors import ConfigError
from dynamo.testing.kube_api import FakeKubeApi

NS = "llm"
SECRET = "mpi-run-ssh-secret"
LWS = OperatorConfig(health_port=0, lws_enabled=True, mpi_run_secret_name=SECRET)
GROVE = OperatorConfig(health_port=0, grove_enabled=True, mpi_run_secret_name=SECRET)
EXAMPLE = REPO / "examples" / "trtllm" / "multinode" / "agg.yaml"
NAME = "trtllm-multinode"
LWS_NAME = f"{NAME}-trtllmworker"
ENGINE = (
    "exec trtllm-llmapi-launch python3 -m dynamo.trtllm "
    "--model-path meta-llama/Llama-3.3-70B-Instruct "
    "--served-model-name meta-llama/Llama-3.3-70B-Instruct --tensor-parallel-size 16"
)


def _body(nodes: int = 2) -> dict[str, Any]:
    doc = load_yaml(EXAMPLE)
    doc["metadata"] |= {"namespace": NS, "uid": "u-1", "generation": 1}
    doc["spec"]["services"]["TrtllmWorker"]["multinode"]["nodeCount"] = nodes
    return doc


def _objects(doc: dict[str, Any], config: OperatorConfig) -> dict[tuple[str, str], Any]:
    return {(o["kind"], o["metadata"]["name"]): o for o in build_manifests(doc, config).objects}


def _main(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return dict(pod_spec["containers"][0])


def _check_ssh_key(pod_spec: dict[str, Any]) -> None:
    """The key Secret is a pod volume (owner-only mode) mounted read-only in `main`."""
    [volume] = [v for v in pod_spec["volumes"] if v["name"] == SSH_KEY_VOLUME]
    assert volume["secret"] == {"secretName": SECRET, "defaultMode": 0o600}
    [mount] = [m for m in _main(pod_spec)["volumeMounts"] if m["name"] == SSH_KEY_VOLUME]
    assert mount == {"name": SSH_KEY_VOLUME, "mountPath": SSH_KEY_MOUNT, "readOnly": True}


def _check_worker(main: dict[str, Any]) -> None:
    """A worker runs sshd only, is ready once port 2222 listens, and has no other probe."""
    [script] = main["args"]
    assert main["command"] == ["/bin/sh", "-c"]
    assert script.endswith('exec /usr/sbin/sshd -D -e -f "$HOME/.ssh/sshd_config"')
    assert "dynamo.trtllm" not in script and "mpirun" not in script
    assert {"name": "ssh", "containerPort": 2222, "protocol": "TCP"} in main["ports"]
    assert main["readinessProbe"] == {
        "tcpSocket": {"port": "ssh"},
        "initialDelaySeconds": 20,
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 10,
    }
    assert "livenessProbe" not in main and "startupProbe" not in main


def _mpirun_line(main: dict[str, Any]) -> str:
    [script] = main["args"]
    [line] = [x for x in script.splitlines() if x.startswith("exec mpirun ")]
    return line


def test_lws_leader_runs_mpirun_over_every_pod_of_the_group() -> None:
    lws = _objects(_body(nodes=3), LWS)[("LeaderWorkerSet", LWS_NAME)]
    validate_k8s(lws)
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 3
    leader, worker = group["leaderTemplate"]["spec"], group["workerTemplate"]["spec"]
    line = _mpirun_line(_main(leader))
    hosts = (
        "$(LWS_LEADER_ADDRESS),${LWS_LEADER_ADDRESS%%.*}-1.${LWS_LEADER_ADDRESS#*.},"
        "${LWS_LEADER_ADDRESS%%.*}-2.${LWS_LEADER_ADDRESS#*.}"
    )
    # 3 nodes x 8 GPUs per node (resources.limits.gpu) = 24 ranks.
    assert line.startswith(f"exec mpirun $as_root --oversubscribe -n 24 -H {hosts} ")
    assert line.endswith(f"$forward /bin/sh -c '{ENGINE}'")
    assert '--mca pml ob1 --mca plm_rsh_args "-F $HOME/.ssh/config -p 2222 ' in line
    # The leader serves: probed like any worker; it and the workers keep Open MPI's FQDNs.
    lead_main = _main(leader)
    assert lead_main["readinessProbe"]["httpGet"]["path"] == "/health"
    for main in (lead_main, _main(worker)):
        assert {"name": "OMPI_MCA_orte_keep_fqdn_hostnames", "value": "1"} in main["env"]
    _check_worker(_main(worker))
    _check_ssh_key(leader)
    _check_ssh_key(worker)


def test_grove_leader_clique_starts_after_the_workers() -> None:
    pcs = _objects(_body(), GROVE)[("PodCliqueSet", NAME)]
    validate_k8s(pcs)
    template = pcs["spec"]["template"]
    assert template["cliqueStartupType"] == "CliqueStartupTypeExplicit"
    cliques = {c["name"]: c for c in template["cliques"]}
    leader, worker = cliques["trtllmworker-ldr"], cliques["trtllmworker-wkr"]
    assert leader["spec"]["startsAfter"] == ["trtllmworker-wkr"]
    assert "startsAfter" not in worker["spec"]
    assert "startsAfter" not in cliques["frontend"]["spec"]
    line = _mpirun_line(_main(leader["spec"]["podSpec"]))
    prefix = "$(GROVE_PCSG_NAME)-$(GROVE_PCSG_INDEX)-trtllmworker"
    hosts = f"{prefix}-ldr-0.$(GROVE_HEADLESS_SERVICE),{prefix}-wkr-0.$(GROVE_HEADLESS_SERVICE)"
    assert f"-n 16 -H {hosts} " in line
    _check_worker(_main(worker["spec"]["podSpec"]))
    _check_ssh_key(leader["spec"]["podSpec"])
    _check_ssh_key(worker["spec"]["podSpec"])


def test_a_vllm_group_gets_no_ssh() -> None:
    doc = load_yaml(REPO / "examples" / "vllm" / "multinode" / "agg.yaml")
    doc["metadata"] |= {"namespace": NS, "uid": "u-1", "generation": 1}
    pcs = _objects(doc, GROVE)[("PodCliqueSet", "vllm-multinode")]
    assert pcs["spec"]["template"]["cliqueStartupType"] == "CliqueStartupTypeAnyOrder"
    for clique in pcs["spec"]["template"]["cliques"]:
        volumes = clique["spec"]["podSpec"].get("volumes", [])
        assert SSH_KEY_VOLUME not in {v["name"] for v in volumes}


def test_no_secret_configured_names_the_value() -> None:
    with pytest.raises(ConfigError) as err:
        build_manifests(_body(), OperatorConfig(lws_enabled=True))
    assert str(err.value) == (
        "spec.services.TrtllmWorker.multinode: multi-node TensorRT-LLM runs mpirun over SSH "
        "and needs an SSH key pair Secret: set dynamo-operator.mpiRun.secretName "
        "(DYN_OPERATOR_MPI_RUN_SECRET_NAME) to the name of a Secret with keys private.key "
        "and private.key.pub in the graph's namespace (see docs/multinode.md)"
    )


async def test_unconfigured_secret_fails_the_graph(cluster: Cluster, kube: FakeKubeApi) -> None:
    async with running_operator(kube, OperatorConfig(health_port=0, lws_enabled=True)):
        await cluster.apply(load_yaml(EXAMPLE), NS)
        status = await cluster.wait_state(NAME, NS, "failed")
    [cond] = status["conditions"]
    assert cond["reason"] == "ValidationFailed"
    assert "set dynamo-operator.mpiRun.secretName" in cond["message"]
    assert ("LeaderWorkerSet", LWS_NAME) not in cluster.objects(NS)


@pytest.fixture
async def lws_operator(kube: FakeKubeApi, cluster: Cluster) -> AsyncIterator[None]:
    async with running_operator(kube, LWS):
        yield


def _secret(**data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "data": encoded}


async def test_graph_waits_for_the_secret_then_deploys(
    cluster: Cluster, lws_operator: None
) -> None:
    await cluster.apply(load_yaml(EXAMPLE), NS)
    status = await cluster.wait_state(NAME, NS, "failed")
    [cond] = status["conditions"]
    assert cond["reason"] == "MissingSecret"
    assert cond["message"] == (
        f"Secret '{SECRET}' (the MPI SSH key pair that multi-node TensorRT-LLM needs) is not "
        f"in namespace '{NS}': create it with keys private.key and private.key.pub "
        "(docs/multinode.md); the graph is retried until it exists"
    )
    assert ("LeaderWorkerSet", LWS_NAME) not in cluster.objects(NS)
    await cluster.apply(_secret(**{"private.key": "k", "private.key.pub": "p"}), NS)
    # The operator retries on its own (kopf's TemporaryError delay), no edit of the graph.
    await cluster.wait_state(NAME, NS, "pending")

    async def made() -> dict[str, Any] | None:
        return cluster.objects(NS).get(("LeaderWorkerSet", LWS_NAME))

    lws = await wait_for(made, "the LeaderWorkerSet", limit_s=60.0)
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    _check_ssh_key(leader)
