"""The platform chart and DGDR profiling: the operator's Role covers what the DGDR controller
does and grants, the profiling settings reach the operator's config and its Jobs, and the
chart-made profiler account (namespace-restricted mode)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from _operator_harness import validate_k8s
from test_helm import CRDS_CHART, NS, PLATFORM, _by_kind, _grants, _helm, _render

from dynamo.operator.config import OperatorConfig
from dynamo.operator.profiling import profiler_rules, profiling_objects
from dynamo.runtime.config import resolve

REQUEST: dict[str, Any] = {
    "apiVersion": "nvidia.com/v1alpha1",
    "kind": "DynamoGraphDeploymentRequest",
    "metadata": {"name": "sla", "namespace": NS, "uid": "u-1"},
    "spec": {"model": "m", "backend": "vllm"},
}
RESTRICTED = PLATFORM / "ci/namespace-restricted-values.yaml"


@pytest.mark.parametrize("restricted", ["false", "true"])
def test_operator_role_covers_the_dgdr_controller(restricted: str) -> None:
    args = ("--set", f"dynamo-operator.namespaceRestriction.enabled={restricted}")
    kind = "Role" if restricted == "true" else "ClusterRole"
    held = _grants(_by_kind(_render(PLATFORM, *args))[(kind, "dynamo-platform-operator")]["rules"])
    needed = [
        ("nvidia.com", "dynamographdeploymentrequests", "watch"),
        ("nvidia.com", "dynamographdeploymentrequests/status", "patch"),
        ("nvidia.com", "dynamographdeployments", "create"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "watch"),
        ("", "pods", "list"),
        ("", "configmaps", "create"),
        ("", "configmaps", "patch"),
        ("", "serviceaccounts", "create"),
        ("rbac.authorization.k8s.io", "roles", "create"),
        ("rbac.authorization.k8s.io", "rolebindings", "create"),
        ("", "events", "create"),
    ]
    for grant in needed:
        assert grant in held, grant
    # RBAC forbids granting what one does not hold: the per-request Role must be covered,
    # thorough mode's trial graphs included.
    assert _grants(profiler_rules("sla")) <= held
    assert _grants(profiler_rules("sla", thorough=True)) <= held


def test_default_install_leaves_the_profiler_account_to_the_operator() -> None:
    objs = _by_kind(_render(PLATFORM))
    data = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
    config = resolve(OperatorConfig, environ=data)
    assert config.profiler_service_account == ""
    assert (config.profiler_backoff_limit, config.profiler_deadline_s) == (1, 14400)
    kinds = [o["kind"] for o in profiling_objects(REQUEST, config)]
    assert kinds == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"]


def test_restricted_install_makes_one_profiler_account_wired_into_the_jobs() -> None:
    objs = _by_kind(_render(PLATFORM, "--values", str(RESTRICTED)))
    name = "dynamo-platform-operator-profiler"
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        obj = objs[(kind, name)]
        validate_k8s(obj)
        assert obj["metadata"]["namespace"] == NS
    held = _grants(objs[("Role", name)]["rules"])
    assert _grants(profiler_rules("any", thorough=True)) <= held
    data = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
    config = resolve(OperatorConfig, environ=data)
    (job,) = [o for o in profiling_objects(REQUEST, config) if o["kind"] != "ConfigMap"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (token,) = [e for e in pod["containers"][0]["env"] if e["name"] == "HF_TOKEN"]
    assert token["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}


def test_a_chart_profiler_account_needs_namespace_restriction() -> None:
    result = subprocess.run(
        [_helm(), "template", "x", str(PLATFORM), "--set",
         "dynamo-operator.profiling.serviceAccount.create=true"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "needs dynamo-operator.namespaceRestriction.enabled" in result.stderr


def test_kubectl_get_dgdr_columns() -> None:
    crd = _by_kind(_render(CRDS_CHART))[
        ("CustomResourceDefinition", "dynamographdeploymentrequests.nvidia.com")
    ]
    (version,) = crd["spec"]["versions"]
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Model", ".spec.model"),
        ("Backend", ".spec.backend"),
        ("State", ".status.state"),
        ("DGD-State", ".status.deployment.state"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert crd["spec"]["names"]["shortNames"] == ["dgdr"]
