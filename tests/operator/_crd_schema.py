"""Instances of other projects' CRDs (Prometheus Operator, Flux, Argo CD, Grove) checked with the
CRD's own OpenAPI schema (`schemas/`, descriptions dropped), strictly: a field the schema
does not declare fails, as the API server would drop it silently."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

SCHEMAS = Path(__file__).parent / "schemas"
_FILES = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json",
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): "helm.toolkit.fluxcd.io_v2_helmrelease.json",
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): (
        "source.toolkit.fluxcd.io_v1_gitrepository.json"
    ),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): (
        "kustomize.toolkit.fluxcd.io_v1_kustomization.json"
    ),
    ("argoproj.io/v1alpha1", "Application"): "argoproj.io_v1alpha1_application.json",
    # Grove's CRD at ai-dynamo/grove fcc3b3bb (2026-08-19), `podSpec` left open: the harness
    # checks each clique's pod spec with Kubernetes' own schema.
    ("grove.io/v1alpha1", "PodCliqueSet"): "grove.io_v1alpha1_podcliqueset.json",
}


def known(doc: dict[str, Any]) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in _FILES


@cache
def _schema(api_version: str, kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / _FILES[(api_version, kind)]).read_text())
    return schema


def strict_unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare (the API server would prune them silently)."""
    if isinstance(obj, list):
        items = schema.get("items", {})
        return [
            u for i, x in enumerate(obj) for u in strict_unknown_fields(x, items, f"{path}[{i}]")
        ]
    if not isinstance(obj, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    props = schema.get("properties")
    if props is None:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return [
                u for k, v in obj.items() for u in strict_unknown_fields(v, extra, f"{path}.{k}")
            ]
        return []
    unknown = [f"{path}.{k}" for k in obj if k not in props]
    for key, value in obj.items():
        if key in props:
            unknown += strict_unknown_fields(value, props[key], f"{path}.{key}")
    return unknown


def validate_crd_instance(doc: dict[str, Any]) -> None:
    schema = _schema(doc["apiVersion"], doc["kind"])
    jsonschema.validate(doc, schema)
    body = {k: v for k, v in doc.items() if k != "metadata"}
    assert strict_unknown_fields(body, schema) == [], doc["kind"]
    # metadata is a plain ObjectMeta: let Kubernetes' own schema judge it
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, "1.33", strict=True
    )
