"""The `kubernetes` connector against the Kubernetes emulator with the real operator: the
connector patches the DGD, the operator scales the Deployments, the DGD status follows, and
`live_replicas` reports what is ready; errors, and the planner Role covering every call."""

from __future__ import annotations

from typing import Any

import pytest
from _connector_harness import RecordingKubeApi
from _operator_harness import REPO, Cluster, load_yaml, wait_for

from dynamo.planner.connectors import ConnectorSettings, make_connector
from dynamo.planner.connectors.kubernetes import KubernetesScaling
from dynamo.runtime.errors import ConfigError, TransportError, UnavailableError
from dynamo.runtime.kube import KubeConnection

NS = "llm"
GRAPH = "mocker-disagg"
PREFILL_DEP = f"{GRAPH}-mockerprefillworker"
DECODE_DEP = f"{GRAPH}-mockerdecodeworker"


def _graph() -> dict[str, Any]:
    """examples/mocker/disagg.yaml plus a Planner service."""
    doc = load_yaml(REPO / "examples" / "mocker" / "disagg.yaml")
    doc["spec"]["services"]["Planner"] = {"componentType": "planner", "replicas": 1}
    return doc


def _connector(kube: RecordingKubeApi, **settings: Any) -> KubernetesScaling:
    fields: dict[str, Any] = {"graph_name": GRAPH, "k8s_namespace": NS, **settings}
    connection = KubeConnection(
        server=str(kube.url).rstrip("/"), token=RecordingKubeApi.PLANNER_TOKEN, insecure=True
    )
    return KubernetesScaling(
        ConnectorSettings(environment="kubernetes", namespace=f"{NS}-{GRAPH}", **fields),
        connection=connection,
    )


async def _all_available(cluster: Cluster) -> None:
    for dep in (f"{GRAPH}-frontend", PREFILL_DEP, DECODE_DEP, f"{GRAPH}-planner"):

        async def created(name: str = dep) -> dict[str, Any] | None:
            return await cluster.get("Deployment", name, NS)

        await wait_for(created, f"Deployment {dep}")
        await cluster.mark_available(dep, NS)
    await cluster.wait_state(GRAPH, NS, "successful")


async def _deployment_replicas(cluster: Cluster, name: str, want: int) -> None:
    async def probe() -> bool:
        dep = await cluster.get("Deployment", name, NS)
        return bool(dep and dep["spec"]["replicas"] == want)

    await wait_for(probe, f"Deployment {name} at {want} replicas")


def _covered(call: tuple[str, str, str, str | None, str | None], rules: list[Any]) -> bool:
    verb, group, plural, sub, name = call
    resource = f"{plural}/{sub}" if sub else plural
    return any(
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and ("resourceNames" not in rule or name in rule["resourceNames"])
        for rule in rules
    )


async def test_planner_scales_the_graph_through_the_operator_and_status_follows(
    kube: RecordingKubeApi, cluster: Cluster, operator: None
) -> None:
    await cluster.apply(_graph(), NS)
    await _all_available(cluster)
    connector = _connector(kube)
    try:
        assert await connector.live_replicas() == {"prefill": 1, "decode": 1}

        await connector.scale({"prefill": 2, "decode": 3}, "test: scale up")
        dgd = await cluster.get("DynamoGraphDeployment", GRAPH, NS)
        assert dgd is not None
        services = dgd["spec"]["services"]
        assert (
            services["MockerPrefillWorker"]["replicas"],
            services["MockerDecodeWorker"]["replicas"],
        ) == (2, 3)
        owned = {m["manager"]: m["fieldsV1"] for m in dgd["metadata"]["managedFields"]}
        assert owned["dynamo-planner"] == {
            "f:spec": {
                "f:services": {
                    "f:MockerDecodeWorker": {"f:replicas": {}},
                    "f:MockerPrefillWorker": {"f:replicas": {}},
                }
            }
        }
        await _deployment_replicas(cluster, PREFILL_DEP, 2)
        await _deployment_replicas(cluster, DECODE_DEP, 3)
        pending = await cluster.wait_state(GRAPH, NS, "pending")
        assert "MockerDecodeWorker: " in pending["conditions"][0]["message"]
        # Decisions start from what runs: nothing new is ready yet.
        assert await connector.live_replicas() == {"prefill": 1, "decode": 1}

        await cluster.mark_available(PREFILL_DEP, NS)
        await cluster.mark_available(DECODE_DEP, NS)
        done = await cluster.wait_state(GRAPH, NS, "successful")
        assert done["services"]["MockerDecodeWorker"]["readyReplicas"] == 3
        assert await connector.live_replicas() == {"prefill": 2, "decode": 3}

        await connector.scale({"prefill": 1, "decode": 1}, "test: scale down")
        await _deployment_replicas(cluster, PREFILL_DEP, 1)
        await _deployment_replicas(cluster, DECODE_DEP, 1)
        await cluster.mark_available(PREFILL_DEP, NS)
        await cluster.mark_available(DECODE_DEP, NS)
        await cluster.wait_state(GRAPH, NS, "successful")

        async def back_to_one() -> bool:
            return await connector.live_replicas() == {"prefill": 1, "decode": 1}

        await wait_for(back_to_one, "live replicas back to 1 + 1")
    finally:
        await connector.close()

    # Every call the connector made is one the operator's planner Role allows.
    role = await cluster.get("Role", f"{GRAPH}-planner-role", NS)
    assert role is not None
    assert kube.planner_calls
    for call in kube.planner_calls:
        assert _covered(call, role["rules"]), call
    assert {c[0] for c in kube.planner_calls} == {"get", "patch"}


async def test_a_service_already_at_its_target_is_not_patched(
    kube: RecordingKubeApi, cluster: Cluster, operator: None
) -> None:
    await cluster.apply(_graph(), NS)
    await _all_available(cluster)
    connector = _connector(kube)
    try:
        await connector.scale({"prefill": 1, "decode": 1}, "steady")
        assert [c[0] for c in kube.planner_calls] == ["get"]
        await connector.scale({"prefill": 1, "decode": 2}, "one role")
        assert [c[0] for c in kube.planner_calls] == ["get", "get", "patch"]
        dgd = await cluster.get("DynamoGraphDeployment", GRAPH, NS)
        assert dgd is not None
        assert dgd["spec"]["services"]["MockerPrefillWorker"]["replicas"] == 1
        assert dgd["spec"]["services"]["MockerDecodeWorker"]["replicas"] == 2
    finally:
        await connector.close()


async def test_aggregated_planner_scales_the_only_worker(
    kube: RecordingKubeApi, cluster: Cluster, operator: None
) -> None:
    doc = load_yaml(REPO / "examples" / "mocker" / "agg.yaml")
    name = doc["metadata"]["name"]
    await cluster.apply(doc, NS)
    connector = _connector(kube, graph_name=name, roles=("decode",))
    try:
        await connector.scale({"decode": 2}, "agg")
        worker = next(
            svc
            for svc, spec in doc["spec"]["services"].items()
            if spec.get("componentType") == "worker"
        )
        await _deployment_replicas(cluster, f"{name}-{worker.lower()}", 2)
    finally:
        await connector.close()


async def test_a_graph_without_a_prefill_service_is_a_config_error(
    kube: RecordingKubeApi, cluster: Cluster
) -> None:
    doc = load_yaml(REPO / "examples" / "mocker" / "agg.yaml")
    name = doc["metadata"]["name"]
    await cluster.apply(doc, NS)
    connector = _connector(kube, graph_name=name)
    try:
        with pytest.raises(ConfigError) as err:
            await connector.scale({"prefill": 1, "decode": 1}, "disagg on an agg graph")
        assert str(err.value).startswith(
            f"DynamoGraphDeployment {NS}/{name} has no service for the prefill role: "
            "set subComponentType: prefill on the worker service that does prefill"
        )
        assert [c[0] for c in kube.planner_calls] == ["get"]
    finally:
        await connector.close()


async def test_status_not_yet_reported_is_unavailable_not_zero(
    kube: RecordingKubeApi, cluster: Cluster
) -> None:
    await cluster.apply(_graph(), NS)  # no operator: nobody writes the status
    connector = _connector(kube)
    try:
        with pytest.raises(UnavailableError, match="has not reported service Mocker"):
            await connector.live_replicas()
    finally:
        await connector.close()


async def test_a_forbidden_call_is_a_config_error_naming_the_grant(
    kube: RecordingKubeApi, cluster: Cluster
) -> None:
    await cluster.apply(_graph(), NS)
    kube.forbid_planner = True
    connector = _connector(kube)
    try:
        with pytest.raises(ConfigError) as err:
            await connector.scale({"prefill": 2, "decode": 2}, "no RBAC")
        assert str(err.value) == (
            f"the planner may not read or patch DynamoGraphDeployment {NS}/{GRAPH}: get "
            f"DynamoGraphDeployment {NS}/{GRAPH}: 403: dynamographdeployments.nvidia.com is "
            "forbidden (it needs get and patch on dynamographdeployments.nvidia.com; the "
            "operator grants them to the `<dgd>-planner` ServiceAccount)"
        )
    finally:
        await connector.close()


async def test_a_missing_graph_is_a_config_error(kube: RecordingKubeApi) -> None:
    connector = _connector(kube, graph_name="nope")
    try:
        with pytest.raises(ConfigError) as err:
            await connector.live_replicas()
        assert str(err.value).startswith(f"DynamoGraphDeployment {NS}/nope does not exist")
    finally:
        await connector.close()


async def test_an_unreachable_api_server_is_a_transport_error(unused_tcp_port: int) -> None:
    settings = ConnectorSettings(
        environment="kubernetes", namespace="x", graph_name=GRAPH, k8s_namespace=NS
    )
    connection = KubeConnection(server=f"http://127.0.0.1:{unused_tcp_port}", token="t")
    connector = KubernetesScaling(settings, connection=connection)
    try:
        with pytest.raises(TransportError, match="unreachable"):
            await connector.live_replicas()
        with pytest.raises(TransportError, match="unreachable"):
            await connector.scale({"prefill": 1, "decode": 1}, "no API")
    finally:
        await connector.close()


def test_the_graph_name_is_required() -> None:
    settings = ConnectorSettings(environment="kubernetes", namespace="x")
    with pytest.raises(ConfigError, match="DYN_PARENT_DGD_K8S_NAME"):
        make_connector(settings)


def test_make_connector_builds_the_kubernetes_connector() -> None:
    settings = ConnectorSettings(environment="kubernetes", namespace="x", graph_name="g")
    assert isinstance(make_connector(settings), KubernetesScaling)
