"""The profiler's output as the operator reads it from ConfigMap `dgdr-output-<dgdr>`: the
graph to deploy, the ConfigMaps it needs, the results; and the graph with the request's
overrides and labels."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from dynamo.deploy.graph import load_graph
from dynamo.operator.profiling import request_labels
from dynamo.operator.reconcile import DGD_KIND
from dynamo.operator.request_validation import RequestFailedError
from dynamo.runtime.errors import ConfigError

# Keys of ConfigMap dgdr-output-<dgdr> (written by `dynamo.profiler.publish`).
RESULTS_KEY = "profiling_results.json"
CONFIG_KEY = "config_with_planner.yaml"
MOCKER_CONFIG_KEY = "mocker_config_with_planner.yaml"


@dataclass(frozen=True)
class Output:
    """What the profiler published: the graph to deploy, the objects it needs (the planner's
    profile ConfigMap), and the results summary."""

    graph: dict[str, Any]
    extras: list[dict[str, Any]]
    results: dict[str, Any] | None


def parse_output(data: Mapping[str, str], key: str, where: str) -> Output:
    """Split `data[key]` (multi-document YAML: ConfigMaps, then one DGD) and check the DGD
    against our model. Raises `RequestFailedError` naming the ConfigMap key."""
    text = data.get(key)
    if not text:
        raise RequestFailedError("SpecGenerated", "InvalidOutput", f"{where} has no key {key}")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise RequestFailedError(
            "SpecGenerated", "InvalidOutput", f"{where} key {key}: not YAML: {exc}"
        ) from exc
    graphs = [d for d in docs if isinstance(d, dict) and d.get("kind") == DGD_KIND]
    if len(graphs) != 1:
        raise RequestFailedError(
            "SpecGenerated",
            "InvalidOutput",
            f"{where} key {key}: {len(graphs)} DynamoGraphDeployments, want exactly 1",
        )
    extras = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"]
    others = [d for d in docs if d not in graphs and d not in extras]
    if others:
        kinds = sorted(
            str(d.get("kind") if isinstance(d, dict) else type(d).__name__) for d in others
        )
        raise RequestFailedError(
            "SpecGenerated", "InvalidOutput", f"{where} key {key}: unexpected kinds {kinds}"
        )
    try:
        load_graph(graphs[0])
    except ConfigError as exc:
        raise RequestFailedError(
            "SpecGenerated", "InvalidOutput", f"{where} key {key}: invalid graph: {exc}"
        ) from exc
    results = None
    if data.get(RESULTS_KEY):
        try:
            loaded = json.loads(data[RESULTS_KEY])
        except ValueError as exc:
            raise RequestFailedError(
                "SpecGenerated", "InvalidOutput", f"{where} key {RESULTS_KEY}: not JSON: {exc}"
            ) from exc
        results = loaded if isinstance(loaded, dict) else None
    return Output(graphs[0], extras, results)


def generated_graph(body: Mapping[str, Any], output: Output) -> dict[str, Any]:
    """The profiler's graph with the request's overrides (name, namespace, labels,
    annotations, workers image) and Dynamo's labels naming the request."""
    meta = body["metadata"]
    spec = body.get("spec") or {}
    overrides = spec.get("deploymentOverrides") or {}
    graph = json.loads(json.dumps(output.graph))
    gmeta = graph.setdefault("metadata", {})
    gmeta["name"] = overrides.get("name") or gmeta.get("name") or meta["name"]
    gmeta["namespace"] = overrides.get("namespace") or meta["namespace"]
    labels = {**(gmeta.get("labels") or {}), **(overrides.get("labels") or {})}
    gmeta["labels"] = {**labels, **request_labels(meta["name"], meta["namespace"])}
    annotations = {**(gmeta.get("annotations") or {}), **(overrides.get("annotations") or {})}
    if annotations:
        gmeta["annotations"] = annotations
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        gmeta.pop(key, None)
    graph.pop("status", None)
    image = overrides.get("workersImage")
    if image:
        for service in (graph.get("spec") or {}).get("services", {}).values():
            extra = service.setdefault("extraPodSpec", {})
            extra.setdefault("mainContainer", {})["image"] = image
    return graph


def summary(results: Mapping[str, Any] | None) -> str:
    """The chosen engines in one line, from `profiling_results.json`'s `selected` (empty when
    the profiler wrote none), e.g. `prefill TP1 (TTFT 70.7 ms), decode TP1 (ITL 24.9 ms at
    concurrency 153)`."""
    selected = (results or {}).get("selected")
    if not isinstance(selected, Mapping):
        return ""
    parts = []
    prefill, decode = selected.get("prefill"), selected.get("decode")
    if isinstance(prefill, Mapping) and "tensorParallelSize" in prefill:
        text = f"prefill TP{prefill['tensorParallelSize']}"
        if isinstance(prefill.get("ttftMs"), int | float):
            text += f" (TTFT {prefill['ttftMs']:.1f} ms)"
        parts.append(text)
    if isinstance(decode, Mapping) and "tensorParallelSize" in decode:
        text = f"decode TP{decode['tensorParallelSize']}"
        if isinstance(decode.get("itlMs"), int | float):
            text += f" (ITL {decode['itlMs']:.1f} ms"
            text += f" at concurrency {decode['concurrency']})" if "concurrency" in decode else ")"
        parts.append(text)
    if parts and (results or {}).get("meetsSla") is False:
        parts.append("closest to the SLA, which nothing met")
    return ", ".join(parts)
