"""How the operator's server-side apply treats other writers, against the fake API server's
SSA: its own fields are put back, everyone else's are left alone, and objects an older
(client-side apply) operator made are adopted in place."""

from __future__ import annotations

import json
from typing import Any

from _operator_harness import GUIDE_DGD, PLURALS, Cluster, load_yaml, running_operator, wait_for

from dynamo.operator.config import OperatorConfig
from dynamo.operator.labels import LAST_APPLIED_ANNOTATION
from dynamo.operator.manifests import build_manifests
from dynamo.testing.kube_api import FakeKubeApi

NS = "dynamo-system"
WORKER = "my-llm-vllmdecodeworker"
FRONTEND = "my-llm-frontend"


def _main(dep: dict[str, Any]) -> dict[str, Any]:
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def _env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _main(dep)["env"]}


def _managers(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]}


async def _get(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await cluster.get(kind, name, NS)

    return await wait_for(probe, f"{kind} {name}")


async def test_hand_edits_of_the_operators_fields_are_undone_on_the_next_reconcile(
    kube: FakeKubeApi, cluster: Cluster
) -> None:
    async with running_operator(kube):
        await cluster.apply(load_yaml(GUIDE_DGD), NS)
        before = await _get(cluster, "Deployment", WORKER)
    assert ("dynamo-operator", "Apply") in _managers(before)
    container = _main(before)
    env = [
        {**e, "value": "edited"} if e["name"] == "DYN_NAMESPACE" else e for e in container["env"]
    ]
    assert env != container["env"]
    edit = {"spec": {"template": {"spec": {"containers": [
        {**container, "image": "registry.local/hacked:1", "env": env}
    ]}}}}  # fmt: skip
    await cluster.patch("Deployment", WORKER, NS, edit, manager="kubectl-edit")
    await cluster.patch("Deployment", WORKER, NS, {"spec": {"replicas": 5}}, sub="scale",
                        manager="hpa")  # fmt: skip
    edited = await _get(cluster, "Deployment", WORKER)
    assert _main(edited)["image"] == "registry.local/hacked:1"
    assert _env(edited)["DYN_NAMESPACE"] == "edited"
    assert ("kubectl-edit", "Update") in _managers(edited)

    async with running_operator(kube):  # resuming reconciles the graph again

        async def restored() -> dict[str, Any] | None:
            dep = await cluster.get("Deployment", WORKER, NS)
            return dep if dep and _main(dep)["image"] == container["image"] else None

        after = await wait_for(restored, "the worker image put back")
    assert _env(after) == _env(before)
    assert after["spec"]["replicas"] == 1  # the DGD pins the worker's replicas
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert ("kubectl-edit", "Update") not in _managers(after)


async def test_fields_others_set_survive_reconciles(kube: FakeKubeApi, cluster: Cluster) -> None:
    doc = load_yaml(GUIDE_DGD)
    del doc["spec"]["services"]["Frontend"]["replicas"]  # not pinned: scaled by others
    async with running_operator(kube):
        await cluster.apply(doc, NS)
        frontend = await _get(cluster, "Deployment", FRONTEND)
        assert frontend["spec"]["replicas"] == 1  # the API server's default
        await cluster.patch("Deployment", FRONTEND, NS, {"spec": {"replicas": 4}}, sub="scale",
                            manager="hpa")  # fmt: skip
        mine = {"metadata": {"labels": {"team": "blue"}, "annotations": {"note": "keep"}}}
        await cluster.patch("Deployment", FRONTEND, NS, mine, manager="kubectl-edit")
        await cluster.patch("Service", FRONTEND, NS, mine, manager="kubectl-edit")

        worker = doc["spec"]["services"]["VllmDecodeWorker"]
        worker["envs"] = [{"name": "RECONCILED", "value": "1"}]
        await cluster.patch("DynamoGraphDeployment", "my-llm", NS, {"spec": doc["spec"]})

        async def reconciled() -> bool:
            dep = await cluster.get("Deployment", WORKER, NS)
            return bool(dep and _env(dep).get("RECONCILED") == "1")

        await wait_for(reconciled, "the graph reconciled after its spec changed")
        frontend = await _get(cluster, "Deployment", FRONTEND)
        assert frontend["spec"]["replicas"] == 4
        assert frontend["metadata"]["labels"]["team"] == "blue"
        assert frontend["metadata"]["annotations"]["note"] == "keep"
        service = await _get(cluster, "Service", FRONTEND)
        assert service["metadata"]["labels"]["team"] == "blue"

        await cluster.mark_available(FRONTEND, NS)
        await cluster.mark_available(WORKER, NS)
        status = await cluster.wait_state("my-llm", NS, "successful")
        assert status["services"]["Frontend"]["availableReplicas"] == 4


async def test_objects_of_the_client_side_apply_operator_are_adopted_in_place(
    kube: FakeKubeApi, cluster: Cluster
) -> None:
    dgd = await cluster.apply(load_yaml(GUIDE_DGD), NS)
    old: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in build_manifests(dgd, OperatorConfig()).objects:
        legacy = json.loads(json.dumps(obj))
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == WORKER:
            # a field the older operator set and this one does not
            _main(legacy)["env"].append({"name": "LEGACY_ONLY", "value": "1"})
            legacy["spec"]["template"]["spec"]["containers"][0] = _main(legacy)
        annotations = legacy["metadata"].setdefault("annotations", {})
        annotations[LAST_APPLIED_ANNOTATION] = json.dumps(legacy, sort_keys=True)
        created = await cluster.apply(legacy, NS, manager="dynamo-operator")
        old[(obj["kind"], obj["metadata"]["name"])] = created
    await cluster.patch("Deployment", WORKER, NS, {"metadata": {"labels": {"team": "blue"}}},
                        manager="kubectl-edit")  # fmt: skip

    async with running_operator(kube):

        async def adopted() -> bool:
            for kind, name in old:
                obj = await cluster.get(kind, name, NS)
                if obj is None or LAST_APPLIED_ANNOTATION in (
                    obj["metadata"].get("annotations") or {}
                ):
                    return False
            return True

        await wait_for(adopted, "every object adopted")

    for (kind, name), before in old.items():
        after = await cluster.get(kind, name, NS)
        assert after is not None
        assert after["metadata"]["uid"] == before["metadata"]["uid"], (kind, name)
        history = kube.objects[PLURALS[kind][0] + "/" + PLURALS[kind][1], NS, name].history
        assert None not in list(history), f"{kind} {name} was deleted and recreated"
        assert ("dynamo-operator", "Update") not in _managers(after), (kind, name)
        assert ("dynamo-operator", "Apply") in _managers(after), (kind, name)
    worker = await cluster.get("Deployment", WORKER, NS)
    assert worker is not None
    assert [c["name"] for c in worker["spec"]["template"]["spec"]["containers"]] == ["main"]
    names = [e["name"] for e in _main(worker)["env"]]
    assert "LEGACY_ONLY" not in names
    assert len(names) == len(set(names))
    assert worker["metadata"]["labels"]["team"] == "blue"
