"""Monitoring in the platform chart: PodMonitors (only where the Prometheus Operator's API is,
or when forced), checked with the PodMonitor CRD's own schema; the Grafana dashboard
ConfigMap; the operator's metrics port."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _operator_harness import validate_k8s
from test_helm import PLATFORM, _by_kind, _render

PODMONITOR_API = "monitoring.coreos.com/v1/PodMonitor"


def monitors(*args: str) -> dict[str, dict[str, Any]]:
    return {name: d for (kind, name), d in _by_kind(_render(PLATFORM, *args)).items()
            if kind == "PodMonitor"}  # fmt: skip


def test_nothing_monitoring_renders_by_default() -> None:
    kinds = {kind for kind, _ in _by_kind(_render(PLATFORM))}
    assert "PodMonitor" not in kinds
    names = [name for kind, name in _by_kind(_render(PLATFORM)) if kind == "ConfigMap"]
    assert names == ["dynamo-platform-operator-config"]


def test_podmonitors_render_where_the_api_exists() -> None:
    found = monitors("--api-versions", PODMONITOR_API)
    assert sorted(found) == [
        "dynamo-platform-frontend",
        "dynamo-platform-operator",
        "dynamo-platform-planner",
        "dynamo-platform-worker",
    ]
    for doc in found.values():
        validate_k8s(doc)
    ports = {n: d["spec"]["podMetricsEndpoints"][0]["port"] for n, d in found.items()}
    assert ports == {
        "dynamo-platform-frontend": "http",
        "dynamo-platform-operator": "metrics",
        "dynamo-platform-planner": "metrics",
        "dynamo-platform-worker": "system",
    }
    worker = found["dynamo-platform-worker"]["spec"]
    assert worker["selector"]["matchExpressions"] == [
        {
            "key": "nvidia.com/dynamo-component-type",
            "operator": "In",
            "values": ["worker", "prefill", "decode"],
        }
    ]
    assert worker["namespaceSelector"] == {"any": True}


def test_forced_off_wins_over_the_api_and_a_bad_value_fails() -> None:
    assert monitors("--api-versions", PODMONITOR_API,
                    "--set", "monitoring.podMonitors.enabled=false") == {}  # fmt: skip
    with pytest.raises(AssertionError, match='must be auto, true or false, not "yes"'):
        _render(PLATFORM, "--set", "monitoring.podMonitors.enabled=yes")


def test_forced_on_with_a_restricted_operator_and_release_labels() -> None:
    found = monitors(
        "--set", "monitoring.podMonitors.enabled=true",
        "--set", "monitoring.podMonitors.labels.release=prometheus",
        "--set", "dynamo-operator.namespaceRestriction.enabled=true",
        "--set", "dynamo-operator.namespaceRestriction.targetNamespace=team-a",
    )  # fmt: skip
    assert len(found) == 4
    for name, doc in found.items():
        validate_k8s(doc)
        assert doc["metadata"]["labels"]["release"] == "prometheus"
        if name != "dynamo-platform-operator":
            assert doc["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_the_operator_exposes_the_port_its_monitor_scrapes() -> None:
    objs = _by_kind(_render(PLATFORM, "--set", "monitoring.podMonitors.enabled=true"))
    dep = objs[("Deployment", "dynamo-platform-operator")]
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 8082, "protocol": "TCP"} in container["ports"]
    config = objs[("ConfigMap", "dynamo-platform-operator-config")]
    assert config["data"]["DYN_OPERATOR_METRICS_PORT"] == "8082"
    selector = objs[("PodMonitor", "dynamo-platform-operator")]["spec"]["selector"]
    assert selector["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_grafana_dashboard_configmap() -> None:
    objs = _by_kind(_render(PLATFORM, "--set", "grafana.enabled=true"))
    cm = objs[("ConfigMap", "dynamo-platform-dashboards")]
    validate_k8s(cm)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Dynamo"
    shipped = PLATFORM / "dashboards/dynamo-overview.json"
    assert json.loads(cm["data"]["dynamo-overview.json"]) == json.loads(shipped.read_text())
