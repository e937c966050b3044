"""Generated CRDs: up to date, structural, valid Kubernetes objects; and the schema they carry
accepts every example DGD and rejects a wrong type."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from _operator_harness import GUIDE_DGD, REPO, load_yaml

from dynamo.operator.crdgen import CRDS, build_crd, main, rendered_files

CRD_DIRS = (REPO / "deploy/crds", REPO / "deploy/helm/dynamo-crds/templates")
EXAMPLES = sorted((REPO / "examples").glob("*/*.yaml"))


def _schema(kind: str) -> dict[str, Any]:
    info = next(i for i in CRDS if i.kind == kind)
    return dict(build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("folder", CRD_DIRS, ids=lambda p: str(p.relative_to(REPO)))
def test_committed_crds_are_up_to_date(folder: Path) -> None:
    expected = rendered_files()
    present = {p.name: p.read_text() for p in folder.glob("nvidia.com_*.yaml")}
    assert sorted(present) == sorted(expected)
    stale = [name for name, text in expected.items() if present[name] != text]
    assert not stale, f"regenerate: python -m dynamo.operator.crdgen --out {folder}: {stale}"


def test_crdgen_cli_writes_every_kind(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "nvidia.com_dynamocomponentdeployments.yaml",
        "nvidia.com_dynamographdeploymentrequests.yaml",
        "nvidia.com_dynamographdeployments.yaml",
    ]


def test_names_scope_short_names_and_subresources() -> None:
    crds = {info.kind: build_crd(info) for info in CRDS}
    short = {kind: crd["spec"]["names"]["shortNames"] for kind, crd in crds.items()}
    assert short == {
        "DynamoGraphDeployment": ["dgd"],
        "DynamoGraphDeploymentRequest": ["dgdr"],
        "DynamoComponentDeployment": ["dcd"],
    }
    for crd in crds.values():
        assert crd["spec"]["group"] == "nvidia.com"
        assert crd["spec"]["scope"] == "Namespaced"
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert "status" in version["subresources"]
        assert any(c["name"] == "Age" for c in version["additionalPrinterColumns"])
    dcd = crds["DynamoComponentDeployment"]["spec"]["versions"][0]["subresources"]
    assert dcd["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.service.replicas",
    }
    dgd_columns = crds["DynamoGraphDeployment"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["jsonPath"] for c in dgd_columns][:2] == [
        ".status.state",
        '.status.conditions[?(@.type=="Ready")].status',
    ]


def _structural_problems(node: Any, path: str) -> list[str]:
    """Violations of Kubernetes' structural-schema rules (a typed node everywhere, no
    anyOf/$ref/nullable, properties and additionalProperties never together)."""
    if not isinstance(node, dict):
        return [f"{path}: not an object"]
    out = []
    open_node = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-int-or-string"
    )
    if "type" not in node and not open_node:
        out.append(f"{path}: no type")
    for key in ("anyOf", "oneOf", "allOf", "$ref", "nullable", "const", "title", "$defs"):
        if key in node:
            out.append(f"{path}: has {key}")
    if "properties" in node and "additionalProperties" in node:
        out.append(f"{path}: properties and additionalProperties")
    for key, child in node.get("properties", {}).items():
        out += _structural_problems(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += _structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _structural_problems(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_schema_is_structural(info: Any) -> None:
    schema = _schema(info.kind)
    assert _structural_problems(schema, info.kind) == []
    # The envelope is the API server's: only `type: object` may be said about metadata.
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["description"]


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_crd_passes_kubernetes_validate(info: Any) -> None:
    kubernetes_validate.validate(build_crd(info), "1.33", strict=True)


def test_examples_exist() -> None:
    backends = {p.parent.name for p in EXAMPLES}
    assert {"mocker", "vllm", "sglang", "trtllm"} <= backends


@pytest.mark.parametrize("path", [GUIDE_DGD, *EXAMPLES], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_validates_against_the_crd_schema(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, _schema(doc["kind"]))


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("Frontend", "replicas"), "two", "'two' is not of type 'integer'"),
        (("Frontend", "replicas"), -1, "-1 is less than the minimum of 0"),
        (("VllmDecodeWorker", "envFromSecret"), 7, "7 is not of type 'string'"),
        (("Frontend", "componentType"), "router", "'router' is not one of"),
        (("Frontend", "envs"), "A=B", "'A=B' is not of type 'array'"),
        (("VllmDecodeWorker", "resources"), {"limits": {"gpu": 1}}, "1 is not of type 'string'"),
    ],
)
def test_crd_schema_rejects_a_wrong_value(where: tuple[str, str], value: Any, message: str) -> None:
    doc = copy.deepcopy(load_yaml(GUIDE_DGD))
    service, field = where
    doc["spec"]["services"][service][field] = value
    with pytest.raises(jsonschema.ValidationError, match=message.replace("(", r"\(")):
        jsonschema.validate(doc, _schema("DynamoGraphDeployment"))
