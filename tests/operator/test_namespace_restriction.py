"""A namespace-restricted operator (`--namespace` / DYN_OPERATOR_NAMESPACE) reconciles only
the graphs of its own namespace."""

from __future__ import annotations

from _operator_harness import GUIDE_DGD, Cluster, load_yaml, running_operator, wait_for

from dynamo.operator.config import OperatorConfig
from dynamo.runtime.config import resolve
from dynamo.testing.kube_api import FakeKubeApi


def test_namespace_comes_from_flag_or_env() -> None:
    assert resolve(OperatorConfig, {}, environ={}).namespace is None
    env = {"DYN_OPERATOR_NAMESPACE": "team-a"}
    assert resolve(OperatorConfig, {}, environ=env).namespace == "team-a"
    assert resolve(OperatorConfig, {"namespace": "team-b"}, environ=env).namespace == "team-b"


async def test_restricted_operator_ignores_other_namespaces(
    kube: FakeKubeApi, cluster: Cluster
) -> None:
    config = OperatorConfig(namespace="team-a", health_port=0)
    async with running_operator(kube, config):
        await cluster.apply(load_yaml(GUIDE_DGD), "team-b")
        await cluster.apply(load_yaml(GUIDE_DGD), "team-a")
        status = await cluster.wait_state("my-llm", "team-a", "pending")
        assert set(status["services"]) == {"Frontend", "VllmDecodeWorker"}
        assert ("Deployment", "my-llm-frontend") in cluster.objects("team-a")
        # A later event in team-b is not seen either.
        patch = {"spec": {"services": {"Frontend": {"replicas": 2}}}}
        await cluster.patch("DynamoGraphDeployment", "my-llm", "team-b", patch)
        await cluster.patch("DynamoGraphDeployment", "my-llm", "team-a", patch)

        async def scaled() -> bool:
            dep = await cluster.get("Deployment", "my-llm-frontend", "team-a")
            return bool(dep and dep["spec"]["replicas"] == 2)

        await wait_for(scaled, "team-a's frontend at 2 replicas")
    other = await cluster.get("DynamoGraphDeployment", "my-llm", "team-b")
    assert other is not None and "status" not in other
    assert set(cluster.objects("team-b")) == {("DynamoGraphDeployment", "my-llm")}
