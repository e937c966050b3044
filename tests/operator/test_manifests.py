"""Manifest builders (pure): the objects the operator creates for a DGD, field by field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from _operator_harness import GUIDE_DGD, REPO, load_yaml, validate_k8s

from dynamo.operator.config import DEFAULT_IMAGE, OperatorConfig
from dynamo.operator.manifests import GraphManifests, build_manifests
from dynamo.runtime.errors import ConfigError

NS = "dynamo-system"
UID = "0b5c2c2e-0000-4000-8000-000000000001"
EXAMPLES = sorted(  # graphs only: DGDR examples are tested in test_request_e2e
    p
    for p in (REPO / "examples").glob("*/*.yaml")
    if load_yaml(p)["kind"] == "DynamoGraphDeployment"
)


def _body(doc: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    body = copy.deepcopy(doc)
    body["metadata"].update(namespace=namespace, uid=UID, generation=1)
    return body


def _build(doc: dict[str, Any], config: OperatorConfig | None = None) -> GraphManifests:
    return build_manifests(_body(doc), config or OperatorConfig())


def _objects(m: GraphManifests) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in m.objects}


def _main(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert containers[0]["name"] == "main"
    return dict(containers[0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _guide() -> dict[str, Any]:
    return load_yaml(GUIDE_DGD)


def test_guide_dgd_objects_and_owners() -> None:
    objs = _objects(_build(_guide()))
    assert sorted(objs) == [
        ("Deployment", "my-llm-frontend"),
        ("Deployment", "my-llm-vllmdecodeworker"),
        ("Role", "my-llm-k8s-service-discovery-role"),
        ("RoleBinding", "my-llm-k8s-service-discovery-binding"),
        ("Service", "my-llm-dynamo-discovery"),
        ("Service", "my-llm-frontend"),
        ("Service", "my-llm-vllmdecodeworker"),
        ("ServiceAccount", "my-llm-k8s-service-discovery"),
    ]
    for obj in objs.values():
        meta = obj["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "nvidia.com/v1alpha1",
                "kind": "DynamoGraphDeployment",
                "name": "my-llm",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["nvidia.com/dynamo-graph-deployment-name"] == "my-llm"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "dynamo"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "dynamo-operator"
    worker = objs[("Deployment", "my-llm-vllmdecodeworker")]
    assert worker["metadata"]["labels"]["nvidia.com/dynamo-component-type"] == "worker"
    assert worker["spec"]["selector"] == {
        "matchLabels": {"nvidia.com/selector": "my-llm-vllmdecodeworker"}
    }
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["nvidia.com/selector"] == "my-llm-vllmdecodeworker"
    assert pod_labels["nvidia.com/dynamo-component"] == "VllmDecodeWorker"


def test_guide_frontend_service_and_container() -> None:
    objs = _objects(_build(_guide()))
    svc = objs[("Service", "my-llm-frontend")]
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == {"nvidia.com/selector": "my-llm-frontend"}
    main = _main(objs[("Deployment", "my-llm-frontend")])
    assert main["image"] == "your-image"
    assert main["command"] == ["python3", "-m", "dynamo.frontend"]
    assert main["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    env = _env(main)
    # One Dynamo namespace per graph: the deprecated per-service dynamoNamespace is ignored.
    assert env["DYN_NAMESPACE"] == "dynamo-system-my-llm"
    assert env["DYN_COMPONENT"] == "frontend"
    assert env["DYN_HTTP_PORT"] == "8000"
    assert env["DYN_DISCOVERY_BACKEND"] == "kubernetes"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Peers in other pods dial the request plane and event publisher at the pod IP.
    assert env["DYN_TCP_RPC_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "NATS_SERVER" not in env and "ETCD_ENDPOINTS" not in env
    assert main["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "startupProbe" not in main


def test_guide_worker_container() -> None:
    objs = _objects(_build(_guide()))
    dep = objs[("Deployment", "my-llm-vllmdecodeworker")]
    main = _main(dep)
    assert main["command"] == ["/bin/sh", "-c"]
    assert main["args"] == ["python3 -m dynamo.vllm --model YOUR_MODEL [--your-flags]"]
    assert main["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert main["envFrom"] == [{"secretRef": {"name": "hf-token-secret"}}]
    env = _env(main)
    assert env["DYN_NAMESPACE"] == "dynamo-system-my-llm"
    assert env["DYN_COMPONENT"] == "worker"
    assert env["DYN_SYSTEM_PORT"] == "9090"
    assert env["DYN_SYSTEM_ENABLED"] == "true"
    assert [e["name"] for e in main["env"]] == sorted(e["name"] for e in main["env"])
    assert main["ports"] == [{"name": "system", "containerPort": 9090, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/live", "port": "system"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/health", "port": "system"}
    assert main["startupProbe"]["failureThreshold"] == 720
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "my-llm-k8s-service-discovery"
    assert pod["terminationGracePeriodSeconds"] == 60
    assert {"name": "shared-memory", "mountPath": "/dev/shm"} in main["volumeMounts"]
    svc = objs[("Service", "my-llm-vllmdecodeworker")]
    assert svc["spec"]["ports"][0]["port"] == 9090
    assert svc["metadata"]["labels"]["nvidia.com/dynamo-discovery-backend"] == "kubernetes"
    role = objs[("Role", "my-llm-k8s-service-discovery-role")]
    assert {  # what pydynamo's Kubernetes discovery uses
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    } in role["rules"]
    assert {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    } in role["rules"]


def test_kubernetes_discovery_gets_a_headless_service_over_every_pod_of_the_graph() -> None:
    objs = _objects(_build(_guide()))
    svc = objs[("Service", "my-llm-dynamo-discovery")]
    assert svc["metadata"]["labels"] == {
        "app.kubernetes.io/name": "dynamo",
        "app.kubernetes.io/instance": "my-llm",
        "app.kubernetes.io/component": "discovery",
        "app.kubernetes.io/part-of": "dynamo",
        "app.kubernetes.io/managed-by": "dynamo-operator",
        "nvidia.com/dynamo-graph-deployment-name": "my-llm",
        "nvidia.com/dynamo-discovery-service": "true",
    }
    assert svc["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": False,
        "selector": {"nvidia.com/dynamo-graph-deployment-name": "my-llm"},
    }
    validate_k8s(svc)
    for name in ("my-llm-frontend", "my-llm-vllmdecodeworker"):  # it selects every pod
        pod_labels = objs[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["nvidia.com/dynamo-graph-deployment-name"] == "my-llm"
    rules = objs[("Role", "my-llm-k8s-service-discovery-role")]["rules"]
    assert {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    } in rules
    validate_k8s(objs[("Role", "my-llm-k8s-service-discovery-role")])


def test_discovery_service_name_must_be_free_and_short() -> None:
    doc = _guide()
    doc["spec"]["services"]["Dynamo-Discovery"] = doc["spec"]["services"].pop("Frontend")
    with pytest.raises(
        ConfigError,
        match=r"spec.services.Dynamo-Discovery: its object name 'my-llm-dynamo-discovery' is "
        r"the graph's discovery Service",
    ):
        _build(doc)
    doc = _guide()
    doc["metadata"]["name"] = "g" * 47
    with pytest.raises(ConfigError, match=r"metadata.name: the discovery Service name 'g{47}-"):
        _build(doc)
    doc = _guide()
    doc["metadata"]["annotations"] = {"nvidia.com/dynamo-discovery-backend": "etcd"}
    assert ("Service", "my-llm-dynamo-discovery") not in _objects(_build(doc))


@pytest.mark.parametrize("path", [GUIDE_DGD, *EXAMPLES], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_object_passes_kubernetes_validate(path: Path) -> None:
    m = _build(load_yaml(path))
    assert m.objects
    for obj in m.objects:
        validate_k8s(obj)


def test_default_image_comes_from_the_operator_config() -> None:
    doc = _guide()
    del doc["spec"]["services"]["Frontend"]["extraPodSpec"]
    objs = _objects(_build(doc))
    assert _main(objs[("Deployment", "my-llm-frontend")])["image"] == DEFAULT_IMAGE
    objs = _objects(_build(doc, OperatorConfig(default_image="registry.local/rt:7")))
    assert _main(objs[("Deployment", "my-llm-frontend")])["image"] == "registry.local/rt:7"


def test_etcd_discovery_and_platform_addresses() -> None:
    doc = _guide()
    doc["metadata"]["annotations"] = {"nvidia.com/dynamo-discovery-backend": "etcd"}
    config = OperatorConfig(
        etcd_address="http://etcd.platform:2379", nats_address="nats://nats.platform:4222"
    )
    objs = _objects(_build(doc, config))
    assert sorted(objs) == [
        ("Deployment", "my-llm-frontend"),
        ("Deployment", "my-llm-vllmdecodeworker"),
        ("Service", "my-llm-frontend"),
    ]
    env = _env(_main(objs[("Deployment", "my-llm-vllmdecodeworker")]))
    assert env["DYN_DISCOVERY_BACKEND"] == "etcd"
    assert env["ETCD_ENDPOINTS"] == "http://etcd.platform:2379"
    assert env["NATS_SERVER"] == "nats://nats.platform:4222"
    assert (
        "serviceAccountName"
        not in objs[("Deployment", "my-llm-frontend")]["spec"]["template"]["spec"]
    )


def test_multinode_service_becomes_a_leader_worker_set() -> None:
    doc = _guide()
    doc["spec"]["services"]["VllmDecodeWorker"]["multinode"] = {"nodeCount": 2}
    doc["spec"]["services"]["VllmDecodeWorker"]["replicas"] = 3
    objs = _objects(_build(doc, OperatorConfig(lws_enabled=True)))
    assert ("Deployment", "my-llm-vllmdecodeworker") not in objs
    lws = objs[("LeaderWorkerSet", "my-llm-vllmdecodeworker")]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert lws["spec"]["replicas"] == 3
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 2
    leader = group["leaderTemplate"]["spec"]["containers"][0]
    worker = group["workerTemplate"]["spec"]["containers"][0]
    assert leader["readinessProbe"]["httpGet"]["path"] == "/health"
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(worker)
    assert leader["resources"] == worker["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert group["leaderTemplate"]["metadata"]["labels"]["role"] == "leader"
    svc = objs[("Service", "my-llm-vllmdecodeworker")]
    assert svc["spec"]["selector"] == {
        "nvidia.com/selector": "my-llm-vllmdecodeworker",
        "role": "leader",
    }
    validate_k8s(lws)


def test_planner_gets_an_account_that_may_patch_the_graph() -> None:
    doc = _guide()
    doc["spec"]["services"]["Planner"] = {"componentType": "planner", "replicas": 1}
    objs = _objects(_build(doc))
    role = objs[("Role", "my-llm-planner-role")]
    assert role["rules"][0] == {
        "apiGroups": ["nvidia.com"],
        "resources": ["dynamographdeployments"],
        "verbs": ["get", "patch"],
        "resourceNames": ["my-llm"],
    }
    planner = objs[("Deployment", "my-llm-planner")]
    assert planner["spec"]["template"]["spec"]["serviceAccountName"] == "my-llm-planner"
    assert _main(planner)["command"] == ["python3", "-m", "dynamo.planner"]
    assert objs[("Service", "my-llm-planner")]["spec"]["ports"][0]["port"] == 9085


def test_main_container_and_pod_overrides_merge() -> None:
    doc = _guide()
    worker = doc["spec"]["services"]["VllmDecodeWorker"]
    worker["envs"] = [{"name": "DYN_SYSTEM_PORT", "value": "9345"}, {"name": "A", "value": "1"}]
    worker["livenessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 30}
    worker["extraPodMetadata"] = {"labels": {"team": "a"}, "annotations": {"note": "x"}}
    worker["sharedMemory"] = {"size": "16Gi"}
    main = worker["extraPodSpec"]["mainContainer"]
    main["env"] = [{"name": "A", "value": "from-main"}, {"name": "B", "value": "2"}]
    main["securityContext"] = {"runAsUser": 1000}
    main["resources"] = {"requests": {"cpu": "2"}, "limits": {"nvidia.com/gpu": "8"}}
    main["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    worker["extraPodSpec"].update(
        nodeSelector={"gpu": "h100"},
        volumes=[{"name": "cache", "emptyDir": {}}],
        containers=[{"name": "sidecar", "image": "busybox"}],
    )
    dep = _objects(_build(doc))[("Deployment", "my-llm-vllmdecodeworker")]
    pod = dep["spec"]["template"]["spec"]
    container = _main(dep)
    env = _env(container)
    # service envs > mainContainer.env > injected defaults
    assert (env["DYN_SYSTEM_PORT"], env["A"], env["B"]) == ("9345", "1", "2")
    assert container["securityContext"] == {"runAsUser": 1000}
    assert container["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"nvidia.com/gpu": "1"},  # the service's resources win
    }
    assert container["volumeMounts"] == [
        {"name": "shared-memory", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": "/cache"},
    ]
    assert container["livenessProbe"] == {"exec": {"command": ["true"]}, "periodSeconds": 30}
    assert container["startupProbe"]["httpGet"]["path"] == "/live"
    assert [c["name"] for c in pod["containers"]] == ["main", "sidecar"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert pod["volumes"][1] == {"name": "cache", "emptyDir": {}}
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "a"
    assert dep["spec"]["template"]["metadata"]["annotations"] == {"note": "x"}
    validate_k8s(dep)


def test_pvcs_shared_memory_off_and_compilation_cache() -> None:
    doc = _guide()
    doc["spec"]["pvcs"] = [
        {
            "name": "models",
            "create": True,
            "size": "100Gi",
            "storageClass": "fast",
            "volumeAccessMode": "ReadWriteMany",
        },
        {"name": "compile"},
    ]
    worker = doc["spec"]["services"]["VllmDecodeWorker"]
    worker["sharedMemory"] = {"disabled": True}
    worker["volumeMounts"] = [
        {"name": "models", "mountPoint": "/models"},
        {"name": "compile", "useAsCompilationCache": True},
    ]
    objs = _objects(_build(doc))
    pvc = objs[("PersistentVolumeClaim", "models")]
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "100Gi"}},
    }
    assert ("PersistentVolumeClaim", "compile") not in objs  # not create: must exist already
    dep = objs[("Deployment", "my-llm-vllmdecodeworker")]
    container = _main(dep)
    assert container["volumeMounts"] == [
        {"name": "models", "mountPath": "/models"},
        {"name": "compile", "mountPath": "/root/.cache/vllm"},
    ]
    assert _env(container)["VLLM_CACHE_ROOT"] == "/root/.cache/vllm"
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"]
    ]
    assert claims == ["models", "compile"]
    validate_k8s(pvc)
    validate_k8s(dep)


def test_update_strategy_annotation() -> None:
    doc = _guide()
    doc["metadata"]["annotations"] = {"nvidia.com/deployment-strategy": "Recreate"}
    dep = _objects(_build(doc))[("Deployment", "my-llm-frontend")]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    doc["metadata"]["annotations"] = {"nvidia.com/deployment-strategy": "RampedSlowRollout"}
    dep = _objects(_build(doc))[("Deployment", "my-llm-frontend")]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["spec"]["services"]["Frontend"].update(replicas=-1),
            "spec.services.Frontend.replicas: Input should be greater than or equal to 0",
        ),
        (
            lambda d: d["spec"]["services"]["VllmDecodeWorker"].update(envFromSecret=["x"]),
            "spec.services.VllmDecodeWorker.envFromSecret: Input should be a valid string",
        ),
        (
            lambda d: d["spec"]["services"].update(Bad_Name={"componentType": "frontend"}),
            "spec.services.Bad_Name: object name 'my-llm-bad_name'",
        ),
        (
            lambda d: d["metadata"].update(
                annotations={"nvidia.com/dynamo-discovery-backend": "x"}
            ),
            "metadata.annotations[nvidia.com/dynamo-discovery-backend]: 'x' is not one of",
        ),
        (
            lambda d: d["spec"].update(services={}),
            "spec.services: Dictionary should have at least 1 item",
        ),
    ],
)
def test_invalid_graph_names_the_field(mutate: Any, message: str) -> None:
    doc = _guide()
    mutate(doc)
    with pytest.raises(ConfigError) as info:
        _build(doc)
    assert str(info.value).startswith(message), str(info.value)
