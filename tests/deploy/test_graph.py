"""The DGD/DGDR/DCD models: every example validates, bad manifests name the bad field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _deploy_manifests import GUIDE_MY_LLM

from dynamo.deploy.dgdr import load_request
from dynamo.deploy.graph import (
    ComponentSpec,
    DynamoComponentDeployment,
    DynamoGraphDeployment,
    GraphSpec,
    dump_manifest,
    load_graph,
)
from dynamo.deploy.kube import ObjectMeta
from dynamo.deploy.schema import json_schema
from dynamo.runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
# Graphs only: examples/<backend>/recipes/ holds engine-argument files (--extra-engine-args).
EXAMPLES = sorted(
    p
    for p in (REPO / "examples").rglob("*.yaml")
    if "recipes" not in p.parts and "kind: DynamoGraphDeployment\n" in p.read_text()
)  # the DGDR examples (kind DynamoGraphDeploymentRequest) are tested in tests/operator


def _doc(text: str = GUIDE_MY_LLM) -> dict:
    return yaml.safe_load(text)


def _error(doc: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_graph(doc)
    return str(info.value)


def test_examples_exist_for_every_backend() -> None:
    names = {str(p.relative_to(REPO / "examples")) for p in EXAMPLES}
    for backend in ("mocker", "vllm", "sglang", "trtllm"):
        for variant in ("agg", "agg_router", "disagg", "disagg_router"):
            assert f"{backend}/{variant}.yaml" in names
        assert (REPO / "examples" / backend / "README.md").is_file()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO / "examples")))
def test_every_example_validates(path: Path) -> None:
    graph = load_graph(path)
    assert graph.spec.services
    assert graph.metadata.name


def test_guide_example_parses() -> None:
    graph = load_graph(GUIDE_MY_LLM)
    assert graph.name == "my-llm"
    assert list(graph.spec.services) == ["Frontend", "VllmDecodeWorker"]
    worker = graph.spec.services["VllmDecodeWorker"]
    assert worker.component_type == "worker"
    assert worker.env_from_secret == "hf-token-secret"
    assert worker.resources is not None and worker.resources.limits is not None
    assert worker.resources.limits.gpu == "1"
    assert worker.dynamo_namespace == "dynamo-dev"


def test_wrong_type_names_the_field() -> None:
    doc = _doc()
    doc["spec"]["services"]["Frontend"]["replicas"] = "two"
    assert _error(doc).startswith(
        "spec.services.Frontend.replicas: Input should be a valid integer"
    )


def test_unknown_field_names_the_field() -> None:
    doc = _doc()
    doc["spec"]["services"]["VllmDecodeWorker"]["replica"] = 2
    assert _error(doc) == "spec.services.VllmDecodeWorker.replica: Extra inputs are not permitted"


def test_snake_case_keys_are_rejected() -> None:
    doc = _doc()
    doc["spec"]["services"]["Frontend"]["component_type"] = "frontend"
    assert "spec.services.Frontend.component_type: Extra inputs are not permitted" in _error(doc)


def test_list_index_in_path() -> None:
    doc = _doc()
    doc["spec"]["envs"] = [{"name": "A", "value": "1"}, {"value": "2"}]
    assert _error(doc) == "spec.envs[1].name: Field required"


def test_bad_component_type_and_negative_replicas() -> None:
    doc = _doc()
    doc["spec"]["services"]["Frontend"]["componentType"] = "fronted"
    doc["spec"]["services"]["VllmDecodeWorker"]["replicas"] = -1
    message = _error(doc)
    assert "spec.services.Frontend.componentType: Input should be 'frontend'" in message
    assert (
        "spec.services.VllmDecodeWorker.replicas: Input should be greater than or equal to 0"
        in message
    )


def test_wrong_kind_and_version() -> None:
    doc = _doc()
    doc["apiVersion"] = "nvidia.com/v1"
    assert _error(doc) == "apiVersion: Input should be 'nvidia.com/v1alpha1'"


def test_graph_needs_a_service_and_a_name() -> None:
    assert "spec.services: Dictionary should have at least 1 item" in _error(
        {
            "apiVersion": "nvidia.com/v1alpha1",
            "kind": "DynamoGraphDeployment",
            "metadata": {"name": "x"},
            "spec": {"services": {}},
        }
    )
    assert "metadata: Field required" in _error(
        {"kind": "DynamoGraphDeployment", "spec": {"services": {"A": {}}}}
    )


def test_volume_mount_must_name_a_graph_pvc() -> None:
    doc = _doc()
    doc["spec"]["services"]["VllmDecodeWorker"]["volumeMounts"] = [
        {"name": "cache", "mountPoint": "/cache"}
    ]
    assert _error(doc) == (
        "spec: services.VllmDecodeWorker.volumeMounts[0].name 'cache' is not in spec.pvcs"
    )
    doc["spec"]["pvcs"] = [{"name": "cache"}]
    assert load_graph(doc).spec.pvcs[0].name == "cache"


def test_pvc_create_needs_size_class_and_mode() -> None:
    doc = _doc()
    doc["spec"]["pvcs"] = [{"name": "cache", "create": True, "size": "10Gi"}]
    assert _error(doc) == (
        "spec.pvcs[0]: size, storageClass and volumeAccessMode are required when create"
    )


def test_mount_point_required_unless_compilation_cache() -> None:
    doc = _doc()
    doc["spec"]["pvcs"] = [{"name": "cache"}]
    worker = doc["spec"]["services"]["VllmDecodeWorker"]
    worker["volumeMounts"] = [{"name": "cache"}]
    assert _error(doc) == (
        "spec.services.VllmDecodeWorker: volumeMounts[0].mountPoint is required unless "
        "useAsCompilationCache"
    )
    worker["volumeMounts"] = [{"name": "cache", "useAsCompilationCache": True}]
    assert load_graph(doc).spec.services["VllmDecodeWorker"].volume_mounts[0].mount_point is None


def test_multinode_needs_two_nodes() -> None:
    doc = _doc()
    doc["spec"]["services"]["VllmDecodeWorker"]["multinode"] = {"nodeCount": 1}
    assert _error(doc) == (
        "spec.services.VllmDecodeWorker.multinode.nodeCount: "
        "Input should be greater than or equal to 2"
    )


def test_pod_spec_passthrough_fields_are_open() -> None:
    doc = _doc()
    pod = doc["spec"]["services"]["VllmDecodeWorker"]["extraPodSpec"]
    pod["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    pod["mainContainer"]["startupProbe"] = {"httpGet": {"path": "/live", "port": 9090}}
    dumped = dump_manifest(load_graph(doc))
    worker = dumped["spec"]["services"]["VllmDecodeWorker"]["extraPodSpec"]
    assert worker["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert worker["mainContainer"]["startupProbe"]["httpGet"]["port"] == 9090


def test_numeric_quantities_become_strings() -> None:
    doc = _doc()
    doc["spec"]["services"]["VllmDecodeWorker"]["resources"] = {"limits": {"gpu": 2, "cpu": 0.5}}
    limits = load_graph(doc).spec.services["VllmDecodeWorker"].resources.limits  # type: ignore[union-attr]
    assert (limits.gpu, limits.cpu) == ("2", "0.5")  # type: ignore[union-attr]


def test_dump_round_trips_the_manifest() -> None:
    doc = _doc()
    assert dump_manifest(load_graph(doc)) == doc


def test_models_can_be_built_in_python() -> None:
    graph = DynamoGraphDeployment(
        metadata=ObjectMeta(name="g"),
        spec=GraphSpec(services={"Frontend": ComponentSpec(component_type="frontend")}),
    )
    assert dump_manifest(graph) == {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "g"},
        "spec": {"services": {"Frontend": {"componentType": "frontend"}}},
    }


def test_load_graph_errors_for_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_graph(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_graph(bad)


def test_multi_document_file_picks_the_graph(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n" + GUIDE_MY_LLM)
    assert load_graph(path).name == "my-llm"


def test_status_model() -> None:
    doc = _doc()
    doc["status"] = {
        "state": "successful",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "all_resources_are_ready",
                "message": "All resources are ready",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
        "services": {
            "Frontend": {
                "componentKind": "Deployment",
                "componentName": "my-llm-frontend",
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
            }
        },
    }
    status = load_graph(doc).status
    assert status is not None and status.state == "successful"
    assert status.services["Frontend"].ready_replicas == 1
    doc["status"]["state"] = "Ready"
    assert _error(doc).startswith("status.state: Input should be")


def test_dgdr_loads_and_names_bad_fields() -> None:
    doc = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeploymentRequest",
        "metadata": {"name": "sla"},
        "spec": {
            "model": "Qwen/Qwen3-0.6B",
            "backend": "vllm",
            "useMocker": True,
            "autoApply": True,
            "profilingConfig": {"profilerImage": "img", "config": {"sla": {"ttft": 200}}},
        },
    }
    request = load_request(doc)
    assert request.spec.use_mocker and request.spec.auto_apply
    assert request.spec.profiling_config is not None
    assert request.spec.profiling_config.config == {"sla": {"ttft": 200}}
    doc["spec"]["backend"] = "tgi"
    with pytest.raises(ConfigError, match=r"^spec.backend: Input should be 'auto'"):
        load_request(doc)


def test_dcd_model() -> None:
    dcd = DynamoComponentDeployment.model_validate(
        {
            "apiVersion": "nvidia.com/v1alpha1",
            "kind": "DynamoComponentDeployment",
            "metadata": {"name": "my-llm-frontend"},
            "spec": {
                "backendFramework": "vllm",
                "serviceName": "Frontend",
                "componentType": "frontend",
                "replicas": 2,
            },
        }
    )
    assert dcd.spec.backend_framework == "vllm" and dcd.spec.replica_count == 2


@pytest.mark.parametrize(
    "kind", ["DynamoGraphDeployment", "DynamoGraphDeploymentRequest", "DynamoComponentDeployment"]
)
def test_structural_schema(kind: str) -> None:
    schema = json_schema(kind)
    text = json.dumps(schema)
    for banned in ('"$ref"', '"anyOf"', '"title"', '"const"', '"$defs"'):
        assert banned not in text
    assert schema["type"] == "object"
    assert schema["properties"]["kind"]["enum"] == [kind]


def test_structural_schema_details() -> None:
    schema = json_schema("DynamoGraphDeployment")
    service = schema["properties"]["spec"]["properties"]["services"]["additionalProperties"]
    props = service["properties"]
    assert props["replicas"] == {
        "type": "integer",
        "minimum": 0,
        "description": "Desired replicas (default 1).",
    }
    assert props["extraPodSpec"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["livenessProbe"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "x-kubernetes-preserve-unknown-fields" not in props["resources"]
    assert schema["properties"]["spec"]["properties"]["services"]["maxProperties"] == 25
    assert schema["required"] == ["metadata", "spec"]
