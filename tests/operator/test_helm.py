"""The Helm charts: `helm lint` and `helm template` with a real helm binary (scripts/get-helm.sh
puts one in .tools/bin), and every rendered object checked by kubernetes-validate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _operator_harness import REPO, validate_k8s

from dynamo import __version__
from dynamo.operator.crdgen import rendered_files

CHARTS = REPO / "deploy/helm"
PLATFORM = CHARTS / "dynamo-platform"
CRDS_CHART = CHARTS / "dynamo-crds"
SCENARIOS = sorted((PLATFORM / "ci").glob("*.yaml"))
NS = "dynamo-system"


def _helm() -> str:
    found = shutil.which("helm", path=f"{REPO / '.tools/bin'}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        if os.environ.get("CI") == "true":  # the chart tier must not pass by skipping
            pytest.fail("helm not found under CI=true: scripts/get-helm.sh failed", pytrace=False)
        pytest.skip("helm not found: run scripts/get-helm.sh (CI does)")
    return found


def _run(*args: str) -> str:
    result = subprocess.run([_helm(), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _render(chart: Path, *args: str) -> list[dict[str, Any]]:
    out = _run("template", "dynamo-platform", str(chart), "--namespace", NS, *args)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("chart", [CRDS_CHART, PLATFORM], ids=lambda p: p.name)
def test_helm_lint(chart: Path) -> None:
    out = _run("lint", "--strict", str(chart))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_platform_scenarios_lint_render_and_validate(values: Path) -> None:
    _run("lint", "--strict", str(PLATFORM), "--values", str(values))
    docs = _render(PLATFORM, "--values", str(values))
    assert docs
    for doc in docs:
        validate_k8s(doc)
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "dynamo-platform"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_default_install_is_cluster_wide_with_secure_pods() -> None:
    objs = _by_kind(_render(PLATFORM))
    assert sorted(objs) == [
        ("ClusterRole", "dynamo-platform-operator"),
        ("ClusterRoleBinding", "dynamo-platform-operator"),
        ("ConfigMap", "dynamo-platform-operator-config"),
        ("Deployment", "dynamo-platform-operator"),
        ("ServiceAccount", "dynamo-platform-operator"),
    ]
    dep = objs[("Deployment", "dynamo-platform-operator")]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"pydynamo/runtime:{__version__}"
    assert container["command"] == ["python3", "-m", "dynamo.operator"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert re.fullmatch(
        r"[0-9a-f]{64}", dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )
    config = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
    # As in NVIDIA Dynamo, graphs find each other through the Kubernetes API: no etcd.
    assert config["DYN_OPERATOR_DISCOVERY_BACKEND"] == "kubernetes"
    assert config["DYN_OPERATOR_ETCD_ADDRESS"] == ""
    assert config["DYN_OPERATOR_NATS_ADDRESS"] == ""
    assert config["DYN_OPERATOR_DEFAULT_IMAGE"] == f"pydynamo/runtime:{__version__}"
    assert "DYN_OPERATOR_NAMESPACE" not in config
    rules = objs[("ClusterRole", "dynamo-platform-operator")]["rules"]
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    for needed in [
        ("nvidia.com", "dynamographdeployments"),
        ("nvidia.com", "dynamographdeployments/status"),
        ("apps", "deployments"),
        ("", "services"),
        ("", "persistentvolumeclaims"),
        ("rbac.authorization.k8s.io", "roles"),
        ("", "events"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
    ]:
        assert needed in granted, needed


def test_namespace_restriction_uses_a_role() -> None:
    args = ("--set", "dynamo-operator.namespaceRestriction.enabled=true")
    objs = _by_kind(_render(PLATFORM, *args))
    kinds = {kind for kind, _ in objs}
    assert {"Role", "RoleBinding"} <= kinds
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds
    role = objs[("Role", "dynamo-platform-operator")]
    assert role["metadata"]["namespace"] == NS
    granted = {r for rule in role["rules"] for r in rule["resources"]}
    assert "namespaces" not in granted and "customresourcedefinitions" not in granted
    config = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
    assert config["DYN_OPERATOR_NAMESPACE"] == NS
    target = ("--set", "dynamo-operator.namespaceRestriction.targetNamespace=team-a")
    objs = _by_kind(_render(PLATFORM, *args, *target))
    assert objs[("Role", "dynamo-platform-operator")]["metadata"]["namespace"] == "team-a"
    assert (
        objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]["DYN_OPERATOR_NAMESPACE"]
        == "team-a"
    )


def test_etcd_discovery_bundles_etcd() -> None:
    values = PLATFORM / "ci/etcd-discovery-values.yaml"
    objs = _by_kind(_render(PLATFORM, "--values", str(values)))
    assert {("Service", "dynamo-platform-etcd"), ("StatefulSet", "dynamo-platform-etcd")} <= set(
        objs
    )
    etcd_pod = objs[("StatefulSet", "dynamo-platform-etcd")]["spec"]["template"]["spec"]
    assert etcd_pod["volumes"] == [{"name": "data", "emptyDir": {}}]
    config = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
    assert config["DYN_OPERATOR_DISCOVERY_BACKEND"] == "etcd"
    assert config["DYN_OPERATOR_ETCD_ADDRESS"] == f"http://dynamo-platform-etcd.{NS}.svc:2379"


def test_bundled_etcd_and_nats_are_wired_into_the_operator() -> None:
    args = (
        "--set", "global.etcd.install=true", "--set", "global.nats.install=true",
        "--set", "etcd.persistence.enabled=true",
    )  # fmt: skip
    objs = _by_kind(_render(PLATFORM, *args))
    claim = objs[("StatefulSet", "dynamo-platform-etcd")]["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert ("StatefulSet", "dynamo-platform-etcd") in objs
    assert ("StatefulSet", "dynamo-platform-nats") in objs
    assert objs[("Service", "dynamo-platform-nats")]["spec"]["ports"][0]["port"] == 4222
    config = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
    assert config["DYN_OPERATOR_ETCD_ADDRESS"] == f"http://dynamo-platform-etcd.{NS}.svc:2379"
    assert config["DYN_OPERATOR_NATS_ADDRESS"] == f"nats://dynamo-platform-nats.{NS}.svc:4222"
    for name in ("dynamo-platform-etcd", "dynamo-platform-nats"):
        pod = objs[("StatefulSet", name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_config_change_rolls_the_operator() -> None:
    def checksum(*args: str) -> str:
        dep = _by_kind(_render(PLATFORM, *args))[("Deployment", "dynamo-platform-operator")]
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() != checksum("--set", "dynamo-operator.logLevel=debug")


def test_crds_chart_renders_the_generated_crds() -> None:
    docs = _render(CRDS_CHART)
    expected = [yaml.safe_load(text) for text in rendered_files().values()]
    key = lambda d: d["metadata"]["name"]  # noqa: E731
    assert sorted(docs, key=key) == sorted(expected, key=key)
    for doc in docs:
        validate_k8s(doc)
        assert doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_chart_versions_follow_the_package() -> None:
    for chart in (PLATFORM, CRDS_CHART):
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        assert meta["appVersion"] == __version__


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_platform_value_is_documented() -> None:
    text = (PLATFORM / "values.yaml").read_text()
    documented = set(re.findall(r"## @param (\S+)", text))
    undocumented = [
        leaf
        for leaf in _leaves(yaml.safe_load(text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert undocumented == []


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("restricted", ["false", "true"])
def test_operator_role_covers_what_the_operator_does_and_grants(restricted: str) -> None:
    from dynamo.operator.rbac import DISCOVERY_RULES, PLANNER_RULES
    from dynamo.operator.reconcile import PRUNABLE_KINDS

    args = (
        *("--set", f"dynamo-operator.namespaceRestriction.enabled={restricted}"),
        *("--set", "dynamo-operator.orchestrators.lws.enabled=true"),
    )
    kind = "Role" if restricted == "true" else "ClusterRole"
    role = _by_kind(_render(PLATFORM, *args))[(kind, "dynamo-platform-operator")]
    held = _grants(role["rules"])
    plurals = {
        "Deployment": "deployments",
        "LeaderWorkerSet": "leaderworkersets",
        "Service": "services",
        "ServiceAccount": "serviceaccounts",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "PersistentVolumeClaim": "persistentvolumeclaims",
    }
    created = [*PRUNABLE_KINDS, ("v1", "PersistentVolumeClaim")]
    for api_version, obj_kind in created:
        group = api_version.rpartition("/")[0]
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            assert (group, plurals[obj_kind], verb) in held, (group, obj_kind, verb)
    # RBAC forbids granting what one does not hold: the per-graph Roles must be covered.
    assert _grants(list(DISCOVERY_RULES) + list(PLANNER_RULES)) <= held
    assert ("nvidia.com", "dynamographdeployments/status", "patch") in held


def test_leaderworkerset_only_when_enabled() -> None:
    """LWS is installed separately: by default the operator neither may touch LWS objects nor
    renders them (a multinode graph fails); the value turns both on."""

    def lws_rules_and_flag(*args: str) -> tuple[bool, str]:
        objs = _by_kind(_render(PLATFORM, *args))
        rules = objs[("ClusterRole", "dynamo-platform-operator")]["rules"]
        granted = any("leaderworkersets" in rule["resources"] for rule in rules)
        config = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
        return granted, config["DYN_OPERATOR_LWS_ENABLED"]

    assert lws_rules_and_flag() == (False, "false")
    enabled = lws_rules_and_flag("--set", "dynamo-operator.orchestrators.lws.enabled=true")
    assert enabled == (True, "true")


def test_grove_only_when_enabled() -> None:
    def grove_grants_and_config(*args: str) -> tuple[set[tuple[str, str, str]], dict[str, str]]:
        objs = _by_kind(_render(PLATFORM, *args))
        rules = objs[("ClusterRole", "dynamo-platform-operator")]["rules"]
        grove = {g for g in _grants(rules) if g[0] == "grove.io"}
        return grove, objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]

    grants, config = grove_grants_and_config()
    assert grants == set()
    assert config["DYN_OPERATOR_GROVE_ENABLED"] == "false"
    grants, config = grove_grants_and_config(
        "--set", "dynamo-operator.orchestrators.grove.enabled=true"
    )
    assert config["DYN_OPERATOR_GROVE_ENABLED"] == "true"
    assert config["DYN_OPERATOR_GROVE_TERMINATION_DELAY"] == "15m"
    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert ("grove.io", "podcliquesets", verb) in grants
    for child in ("podcliques", "podcliquescalinggroups"):
        assert {("grove.io", child, v) for v in ("get", "list", "watch", "patch")} <= grants


def test_mpi_secret_value_sets_the_config_and_one_named_secret_read() -> None:
    """Multi-node TensorRT-LLM's SSH key Secret: unset by default (such graphs fail naming the
    value) and no Secret access; set, the operator may read that one Secret by name only."""

    def secret_rules_and_config(*args: str) -> tuple[list[dict[str, Any]], str]:
        objs = _by_kind(_render(PLATFORM, *args))
        rules = objs[("ClusterRole", "dynamo-platform-operator")]["rules"]
        config = objs[("ConfigMap", "dynamo-platform-operator-config")]["data"]
        secret_rules = [r for r in rules if "secrets" in r["resources"]]
        return secret_rules, config["DYN_OPERATOR_MPI_RUN_SECRET_NAME"]

    assert secret_rules_and_config() == ([], "")
    rules, name = secret_rules_and_config(
        "--set", "dynamo-operator.mpiRun.secretName=mpi-run-ssh-secret"
    )
    assert name == "mpi-run-ssh-secret"
    assert rules == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["mpi-run-ssh-secret"],
            "verbs": ["get"],
        }
    ]
