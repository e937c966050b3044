"""DGD status from workload status: readiness rules, state and the Ready condition."""

from __future__ import annotations

from typing import Any

from dynamo.operator.status import Workload, failed_status, graph_status, workload_ready

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def _dep(desired: int, *, ready: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed,
            "replicas": desired,
            "updatedReplicas": ready,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": "True" if ready else "False"}],
        },
    }


def test_deployment_readiness_rules() -> None:
    w = Workload("Frontend", "Deployment", "g-frontend", 2)
    assert workload_ready(w, None) == (False, "Deployment g-frontend does not exist")
    assert workload_ready(w, _dep(2, ready=2)) == (True, "")
    assert workload_ready(w, _dep(2, ready=1)) == (False, "1/2 replicas updated")
    stale = _dep(2, ready=2, generation=2, observed=1)
    assert workload_ready(w, stale) == (
        False,
        "Deployment g-frontend has not observed generation 2",
    )
    assert workload_ready(Workload("F", "Deployment", "x", 0), {"status": {}}) == (True, "")


def test_leader_worker_set_readiness() -> None:
    w = Workload("Worker", "LeaderWorkerSet", "g-worker", 2)
    lws = {"status": {"readyReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}}
    assert workload_ready(w, lws) == (False, "1/2 groups ready")
    lws["status"]["readyReplicas"] = 2
    assert workload_ready(w, lws) == (True, "")


def test_graph_status_pending_then_successful() -> None:
    expected = [
        Workload("Frontend", "Deployment", "g-frontend", 1),
        Workload("Worker", "Deployment", "g-worker", 2),
    ]
    live = {"Frontend": _dep(1, ready=1), "Worker": _dep(2, ready=0)}
    pending = graph_status(expected, live, now=NOW, generation=3)
    assert pending["state"] == "pending"
    assert pending["observedGeneration"] == 3
    (cond,) = pending["conditions"]
    assert cond == {
        "type": "Ready",
        "status": "False",
        "reason": "some_resources_are_not_ready",
        "message": "Resources not ready: Worker: 0/2 replicas updated",
        "lastTransitionTime": NOW,
        "observedGeneration": 3,
    }
    assert pending["services"]["Worker"] == {
        "componentKind": "Deployment",
        "componentName": "g-worker",
        "replicas": 2,
        "updatedReplicas": 0,
        "readyReplicas": 0,
        "availableReplicas": 0,
    }
    live["Worker"] = _dep(2, ready=2)
    done = graph_status(expected, live, now=LATER, generation=3, previous=pending)
    assert done["state"] == "successful"
    assert done["conditions"][0]["reason"] == "all_resources_are_ready"
    assert done["conditions"][0]["message"] == "All resources are ready"
    assert done["conditions"][0]["lastTransitionTime"] == LATER
    again = graph_status(expected, live, now="2026-01-02T00:00:00Z", generation=3, previous=done)
    assert again == done  # unchanged status keeps its transition time


def test_failed_status_names_the_reason() -> None:
    status = failed_status(
        "spec.services.Frontend.replicas: bad", reason="ValidationFailed", now=NOW, generation=2
    )
    assert status["state"] == "failed"
    assert status["conditions"][0]["reason"] == "ValidationFailed"
    assert status["conditions"][0]["message"] == "spec.services.Frontend.replicas: bad"
