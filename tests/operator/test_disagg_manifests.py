"""The operator's objects of a disaggregated graph say which workers prefill and which decode
(`subComponentType` → the `nvidia.com/dynamo-sub-component-type` label on the workload, its pods
and its Service), for every backend's `disagg*.yaml` example."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from _operator_harness import REPO, load_yaml

from dynamo.operator.config import OperatorConfig
from dynamo.operator.manifests import build_manifests

SUB = "nvidia.com/dynamo-sub-component-type"
DISAGG = sorted((REPO / "examples").glob("*/disagg*.yaml"))


def _objects(doc: dict[str, Any]) -> list[dict[str, Any]]:
    body = copy.deepcopy(doc)
    body["metadata"].update(
        namespace="ns", uid="0b5c2c2e-0000-4000-8000-000000000002", generation=1
    )
    return build_manifests(body, OperatorConfig()).objects


@pytest.mark.parametrize("path", DISAGG, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_prefill_and_decode_workloads_carry_their_sub_component_type(path: Path) -> None:
    doc = load_yaml(path)
    wanted = {
        name.lower(): svc["subComponentType"]
        for name, svc in doc["spec"]["services"].items()
        if svc.get("componentType") == "worker"
    }
    assert sorted(set(wanted.values())) == ["decode", "prefill"]
    prefix = doc["metadata"]["name"] + "-"
    seen: dict[str, str] = {}
    for obj in _objects(doc):
        if obj["kind"] not in ("Deployment", "LeaderWorkerSet"):
            continue
        service = obj["metadata"]["name"].removeprefix(prefix)
        if service not in wanted:
            continue
        seen[service] = obj["metadata"]["labels"][SUB]
        assert obj["spec"]["template"]["metadata"]["labels"][SUB] == wanted[service]
    assert seen == wanted


def test_a_frontend_has_no_sub_component_type() -> None:
    doc = load_yaml(REPO / "examples" / "vllm" / "disagg.yaml")
    frontends = [
        o
        for o in _objects(doc)
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-frontend")
    ]
    assert len(frontends) == 1 and SUB not in frontends[0]["metadata"]["labels"]
