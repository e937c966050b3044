"""A PodMonitor (a Prometheus Operator CRD) checked with the CRD's own OpenAPI schema, strictly:
fields the schema does not declare fail (the API server would drop them silently)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

SCHEMA = json.loads((Path(__file__).parent / "schemas/podmonitor-v1.json").read_text())


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


def validate_podmonitor(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, SCHEMA)
    assert strict_unknown_fields({k: v for k, v in doc.items() if k != "metadata"}, SCHEMA) == []
    # metadata is a plain ObjectMeta: let Kubernetes' own schema judge it
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, "1.33", strict=True
    )
