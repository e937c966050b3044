"""Structural OpenAPI v3 schemas of the CRD models, as `apiextensions.k8s.io/v1` wants them.

Pydantic's JSON schema is turned into a structural one: `$ref`s inlined, nullable `anyOf`s
flattened, titles dropped, open objects marked `x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dynamo.deploy.dgdr import DynamoGraphDeploymentRequest
from dynamo.deploy.graph import DynamoComponentDeployment, DynamoGraphDeployment

CRD_MODELS: dict[str, type[BaseModel]] = {
    "DynamoGraphDeployment": DynamoGraphDeployment,
    "DynamoGraphDeploymentRequest": DynamoGraphDeploymentRequest,
    "DynamoComponentDeployment": DynamoComponentDeployment,
}
_DROP = {"title", "$defs"}
_OPEN = {"x-kubernetes-preserve-unknown-fields": True}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {k: _resolve(v, defs) for k, v in node.items() if k not in _DROP}


def _flatten_any_of(node: dict[str, Any]) -> dict[str, Any]:
    options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
    if len(options) == 1:
        return {**options[0], **node}
    types = {o.get("type") for o in options}
    if types == {"integer", "string"}:
        return {**node, "x-kubernetes-int-or-string": True}
    return {**node, **_OPEN}


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        node = _flatten_any_of(node)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None or node.get("default") in ({}, []):
        node.pop("default")
    if not any(k in node for k in ("type", "x-kubernetes-int-or-string", *_OPEN)):
        node.update(_OPEN)  # `Any`: no declared type
    extra = node.pop("additionalProperties", None)
    if extra is True or extra == {}:
        node.update(_OPEN)
    elif isinstance(extra, dict):
        node["additionalProperties"] = _structural(extra)
    if "properties" in node:
        node["properties"] = {k: _structural(v) for k, v in node["properties"].items()}
    if "items" in node:
        node["items"] = _structural(node["items"])
    return node


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's validation schema (camelCase) as a structural OpenAPI v3 schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return dict(_structural(_resolve(raw, raw.get("$defs", {}))))


def json_schema(kind: str) -> dict[str, Any]:
    """Structural schema of one CRD kind, e.g. `json_schema("DynamoGraphDeployment")`."""
    try:
        return structural_schema(CRD_MODELS[kind])
    except KeyError:
        raise KeyError(f"unknown kind {kind!r}; known: {sorted(CRD_MODELS)}") from None
