"""The graph builder: env injection, namespaces, resources, commands, replicas, modes."""

from __future__ import annotations

import pytest
import yaml
from _deploy_manifests import GUIDE_MY_LLM

from dynamo.deploy.builder import (
    build_graph,
    build_service,
    compute_dynamo_namespace,
    detect_backend,
    shell_words,
)
from dynamo.deploy.graph import load_graph
from dynamo.runtime.errors import ConfigError


def _graph(extra: str = "") -> dict:
    return yaml.safe_load(GUIDE_MY_LLM + extra)


def _by_name(doc: dict, **kwargs: object) -> dict:
    return {s.name: s for s in build_graph(load_graph(doc), **kwargs)}  # type: ignore[arg-type]


def test_guide_example_builds() -> None:
    specs = build_graph(load_graph(GUIDE_MY_LLM))
    assert [s.name for s in specs] == ["Frontend", "VllmDecodeWorker"]
    frontend, worker = specs
    assert frontend.command == ("python3", "-m", "dynamo.frontend")
    assert frontend.args == ()
    assert frontend.ports == {"http": 8000}
    assert frontend.image == "your-image"
    assert worker.command == ("/bin/sh", "-c")
    assert worker.args == ("python3 -m dynamo.vllm --model YOUR_MODEL [--your-flags]",)
    assert worker.backend_framework == "vllm"
    assert worker.replicas == 1
    assert worker.env_from_secret == "hf-token-secret"
    assert worker.k8s_name == "my-llm-vllmdecodeworker"


def test_dynamo_namespace_ignores_the_deprecated_field() -> None:
    specs = _by_name(_graph(), k8s_namespace="team-a")
    for spec in specs.values():
        assert spec.env["DYN_NAMESPACE"] == "team-a-my-llm"
        assert spec.dynamo_namespace == "team-a-my-llm"


def test_dynamo_namespace_defaults() -> None:
    doc = _graph()
    assert _by_name(doc)["Frontend"].env["DYN_NAMESPACE"] == "default-my-llm"
    doc["metadata"]["namespace"] = "prod"
    assert _by_name(doc)["Frontend"].env["DYN_NAMESPACE"] == "prod-my-llm"
    assert compute_dynamo_namespace("ns", "a.b.c") == "ns-a-b-c"
    assert compute_dynamo_namespace("ns", "g", is_global=True) == "dynamo"
    doc["spec"]["services"]["Frontend"]["globalDynamoNamespace"] = True
    assert _by_name(doc)["Frontend"].env["DYN_NAMESPACE"] == "dynamo"
    assert _by_name(doc, dynamo_namespace="forced")["Frontend"].env["DYN_NAMESPACE"] == "forced"


def test_injected_env_local_mode() -> None:
    frontend = _by_name(_graph())["Frontend"]
    assert frontend.env == {
        "DYNAMO_PORT": "8000",
        "DYN_COMPONENT": "frontend",
        "DYN_DISCOVERY_BACKEND": "file",
        "DYN_HTTP_PORT": "8000",
        "DYN_NAMESPACE": "default-my-llm",
        "DYN_PARENT_DGD_K8S_NAME": "my-llm",
        "DYN_PARENT_DGD_K8S_NAMESPACE": "default",
    }
    worker = _by_name(_graph())["VllmDecodeWorker"]
    assert "DYN_SYSTEM_PORT" not in worker.env
    assert worker.ports == {}
    assert worker.env_value_from == {}


def test_injected_env_kubernetes_mode() -> None:
    specs = _by_name(_graph(), mode="kubernetes", k8s_namespace="ns")
    worker = specs["VllmDecodeWorker"]
    assert worker.env["DYN_SYSTEM_PORT"] == "9090"
    assert worker.env["DYN_SYSTEM_ENABLED"] == "true"
    assert worker.env["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] == '["generate"]'
    assert worker.env["DYN_HEALTH_CHECK_ENABLED"] == "false"
    assert worker.env["DYN_DISCOVERY_BACKEND"] == "kubernetes"
    # the operator makes the graph's discovery Service, so pod readiness is the liveness
    assert worker.env["DYN_KUBE_DISCOVERY_LIVENESS"] == "readiness"
    assert specs["Frontend"].env["DYN_KUBE_DISCOVERY_LIVENESS"] == "readiness"
    assert worker.ports == {"system": 9090}
    assert worker.env_value_from["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert set(worker.env_value_from) == {"POD_NAME", "POD_NAMESPACE", "POD_UID"}
    assert "DYN_SYSTEM_PORT" not in specs["Frontend"].env


def test_discovery_annotation_and_infrastructure() -> None:
    doc = _graph()
    doc["metadata"]["annotations"] = {"nvidia.com/dynamo-discovery-backend": "etcd"}
    specs = _by_name(doc, mode="kubernetes", infrastructure={"ETCD_ENDPOINTS": "http://etcd:2379"})
    assert specs["Frontend"].env["DYN_DISCOVERY_BACKEND"] == "etcd"
    assert specs["Frontend"].env["ETCD_ENDPOINTS"] == "http://etcd:2379"
    assert "DYN_KUBE_DISCOVERY_LIVENESS" not in specs["Frontend"].env
    assert _by_name(doc)["Frontend"].env["DYN_DISCOVERY_BACKEND"] == "file"  # local ignores it


def test_env_precedence_graph_then_service() -> None:
    doc = _graph()
    doc["spec"]["envs"] = [{"name": "A", "value": "graph"}, {"name": "B", "value": "graph"}]
    doc["spec"]["services"]["Frontend"]["envs"] = [
        {"name": "B", "value": "service"},
        {"name": "DYN_ROUTER_MODE", "value": "kv"},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    specs = _by_name(doc)
    frontend = specs["Frontend"]
    assert frontend.env["A"] == "graph"
    assert frontend.env["B"] == "service"
    assert frontend.env["DYN_ROUTER_MODE"] == "kv"
    assert frontend.env_value_from == {"SECRET": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert list(frontend.env) == sorted(frontend.env)
    assert specs["VllmDecodeWorker"].env["B"] == "graph"


def test_gpu_mapping() -> None:
    doc = _graph()
    worker = doc["spec"]["services"]["VllmDecodeWorker"]
    worker["resources"] = {
        "requests": {"cpu": "2", "memory": "8Gi", "gpu": "1"},
        "limits": {"gpu": "1", "custom": {"ephemeral-storage": "2Gi"}},
    }
    assert _by_name(doc)["VllmDecodeWorker"].resources == {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1", "ephemeral-storage": "2Gi"},
    }
    worker["resources"] = {"limits": {"gpu": "2", "gpuType": "amd.com/gpu"}}
    assert _by_name(doc)["VllmDecodeWorker"].resources == {"limits": {"amd.com/gpu": "2"}}


def test_replicas_default_and_overrides() -> None:
    doc = _graph()
    del doc["spec"]["services"]["Frontend"]["replicas"]
    doc["spec"]["services"]["VllmDecodeWorker"]["replicas"] = 3
    specs = _by_name(doc)
    assert specs["Frontend"].replicas == 1
    assert specs["VllmDecodeWorker"].replicas == 3
    assert _by_name(doc, replicas={"VllmDecodeWorker": 0})["VllmDecodeWorker"].replicas == 0
    with pytest.raises(ConfigError, match="graph 'my-llm' has no service Nope"):
        build_graph(load_graph(doc), replicas={"Nope": 1})
    with pytest.raises(ConfigError, match="has no service 'Nope'"):
        build_service(load_graph(doc), "Nope")


def test_http_port_override_rewrites_flags() -> None:
    doc = _graph()
    doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"].update(
        command=["python3", "-m", "dynamo.frontend"],
        args=["--http-port", "8000", "--router-mode", "kv"],
    )
    frontend = _by_name(doc, http_port=9123)["Frontend"]
    assert frontend.args == ("--http-port", "9123", "--router-mode", "kv")
    assert frontend.env["DYN_HTTP_PORT"] == "9123"
    assert frontend.ports == {"http": 9123}
    doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"].update(
        command=["/bin/sh", "-c"], args=["python3 -m dynamo.frontend --http-port=8000"]
    )
    assert _by_name(doc, http_port=9123)["Frontend"].args == (
        "python3 -m dynamo.frontend --http-port=9123",
    )


def test_worker_without_command_is_an_error() -> None:
    doc = _graph()
    del doc["spec"]["services"]["VllmDecodeWorker"]["extraPodSpec"]
    with pytest.raises(
        ConfigError,
        match=r"VllmDecodeWorker\.extraPodSpec\.mainContainer: a worker needs a command",
    ):
        build_graph(load_graph(doc))


def test_args_without_command_run_in_a_shell() -> None:
    doc = _graph()
    del doc["spec"]["services"]["VllmDecodeWorker"]["extraPodSpec"]["mainContainer"]["command"]
    worker = _by_name(doc)["VllmDecodeWorker"]
    assert worker.command == ("/bin/sh", "-c")


def test_backend_detection_and_mismatch() -> None:
    assert detect_backend(("python3", "-m", "dynamo.sglang", "--tp", "1")) == "sglang"
    assert detect_backend(("/bin/sh", "-c", "python -m dynamo.trtllm")) == "trtllm"
    assert detect_backend(("python3", "-m", "dynamo.mocker")) is None
    with pytest.raises(ConfigError, match="several backends"):
        detect_backend(("sh", "-c", "python3 -m dynamo.vllm & python3 -m dynamo.sglang"))
    doc = _graph()
    doc["spec"]["backendFramework"] = "sglang"
    with pytest.raises(
        ConfigError, match=r"runs dynamo\.vllm but spec\.backendFramework is sglang"
    ):
        build_graph(load_graph(doc))


def test_labels_and_multinode() -> None:
    doc = _graph()
    worker = doc["spec"]["services"]["VllmDecodeWorker"]
    worker["subComponentType"] = "decode"
    worker["multinode"] = {"nodeCount": 2}
    worker["labels"] = {"team": "a"}
    spec = _by_name(doc)["VllmDecodeWorker"]
    assert spec.node_count == 2
    assert spec.labels == {
        "nvidia.com/dynamo-graph-deployment-name": "my-llm",
        "nvidia.com/dynamo-component": "VllmDecodeWorker",
        "nvidia.com/dynamo-namespace": "default-my-llm",
        "nvidia.com/dynamo-component-type": "worker",
        "nvidia.com/dynamo-sub-component-type": "decode",
        "team": "a",
    }


def test_shell_words_unwraps_simple_scripts_only() -> None:
    doc = _graph()
    main = doc["spec"]["services"]["VllmDecodeWorker"]["extraPodSpec"]["mainContainer"]
    main["args"] = ["python3 -m dynamo.vllm --model Qwen/Qwen3-0.6B --served-model-name 'a b'"]
    spec = _by_name(doc)["VllmDecodeWorker"]
    assert shell_words(spec) == (
        "python3",
        "-m",
        "dynamo.vllm",
        "--model",
        "Qwen/Qwen3-0.6B",
        "--served-model-name",
        "a b",
    )
    main["args"] = ["python3 -m dynamo.vllm --model $MODEL && echo done"]
    spec = _by_name(doc)["VllmDecodeWorker"]
    assert shell_words(spec) == spec.argv
