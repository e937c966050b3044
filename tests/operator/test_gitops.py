"""The GitOps manifests of deploy/gitops (Flux and Argo CD): valid against their CRDs' own
schemas, pointing at paths and objects that exist, with values the charts render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from _operator_harness import REPO, validate_k8s
from test_helm import _render

from dynamo.operator.config import OperatorConfig
from dynamo.operator.manifests import build_manifests

GITOPS = REPO / "deploy/gitops"
FLUX = sorted((GITOPS / "flux").glob("*.yaml"))
ARGO = sorted((GITOPS / "argocd").glob("*.yaml"))
GRAPHS = sorted((GITOPS / "graphs").glob("*.yaml"))
DGD_CRD = REPO / "deploy/crds/nvidia.com_dynamographdeployments.yaml"


def _docs(paths: list[Path]) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _repo_path(path: str) -> Path:
    return REPO / path.removeprefix("./")


@pytest.mark.parametrize(
    "doc", _docs(FLUX + ARGO), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_valid_against_the_crd_schema(doc: dict[str, Any]) -> None:
    validate_k8s(doc)


def test_flux_references_resolve() -> None:
    docs = _docs(FLUX)
    sources = _named(docs, "GitRepository")
    releases = _named(docs, "HelmRelease")
    (kustomization,) = _named(docs, "Kustomization").values()
    assert sorted(releases) == ["dynamo-crds", "dynamo-platform"]
    for release in releases.values():
        chart = release["spec"]["chart"]["spec"]
        assert chart["sourceRef"]["name"] in sources
        assert (_repo_path(chart["chart"]) / "Chart.yaml").is_file()
        for dep in release["spec"].get("dependsOn", []):
            assert dep["name"] in releases
    assert releases["dynamo-platform"]["spec"]["dependsOn"] == [{"name": "dynamo-crds"}]
    assert kustomization["spec"]["sourceRef"]["name"] in sources
    assert _repo_path(kustomization["spec"]["path"]) == GITOPS / "graphs"
    (check,) = kustomization["spec"]["healthChecks"]
    assert check["name"] in releases


def test_argo_waves_and_paths() -> None:
    apps = _named(_docs(ARGO), "Application")
    waves = {
        n: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for n, a in apps.items()
    }
    assert waves == {"dynamo-crds": 0, "dynamo-platform": 1, "dynamo-graphs": 2}
    for app in apps.values():
        assert _repo_path(app["spec"]["source"]["path"]).is_dir()
    assert apps["dynamo-crds"]["spec"]["syncPolicy"]["automated"]["prune"] is False


def _values_of_platform() -> list[dict[str, Any]]:
    flux = _named(_docs(FLUX), "HelmRelease")["dynamo-platform"]["spec"]["values"]
    argo = _named(_docs(ARGO), "Application")["dynamo-platform"]["spec"]["source"]["helm"]
    return [flux, argo["valuesObject"]]


@pytest.mark.parametrize("values", _values_of_platform(), ids=["flux", "argocd"])
def test_platform_values_render(values: dict[str, Any], tmp_path: Path) -> None:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    docs = _render(REPO / "deploy/helm/dynamo-platform", "--values", str(file),
                   "--api-versions", "monitoring.coreos.com/v1/PodMonitor")  # fmt: skip
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "PodMonitor", "ConfigMap"} <= kinds
    for doc in docs:
        validate_k8s(doc)
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    assert {m["metadata"]["labels"]["release"] for m in monitors} == {"prometheus"}


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: p.name)
def test_graphs_are_valid_and_build(path: Path) -> None:
    crd = yaml.safe_load(DGD_CRD.read_text())
    (version,) = crd["spec"]["versions"]
    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
    body = json.loads(json.dumps(doc))
    body["metadata"].update(namespace="dynamo-system", uid="u1", generation=1)
    for obj in build_manifests(body, OperatorConfig()).objects:
        validate_k8s(obj)
