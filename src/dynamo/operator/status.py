"""DGD status from the live workloads: per-service replica counts, `state` and the `Ready`
condition (pure functions; the reasons and messages are Dynamo's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

READY = "Ready"
REASON_READY = "all_resources_are_ready"
REASON_NOT_READY = "some_resources_are_not_ready"
REASON_INVALID = "ValidationFailed"
REASON_RECONCILE_FAILED = "failed_to_reconcile_the_resources"
REASON_MISSING_SECRET = "MissingSecret"
GROVE_CHILDREN = {"PodClique": "readyReplicas", "PodCliqueScalingGroup": "availableReplicas"}


@dataclass(frozen=True)
class Workload:
    """What the operator expects for one service: its workload's kind, name and replicas
    (None: whatever the workload's own `spec.replicas` says, when the DGD does not set them)."""

    service: str
    kind: str  # Deployment | LeaderWorkerSet | PodClique | PodCliqueScalingGroup (Grove)
    name: str
    replicas: int | None


def _condition(obj: Mapping[str, Any], kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def workload_ready(expected: Workload, obj: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(ready?, why not). A Deployment is ready when its controller has seen the current
    generation and every desired replica is updated and available; zero desired is ready."""
    if obj is None:
        return False, f"{expected.kind} {expected.name} does not exist"
    want = expected.replicas
    if want is None:
        want = int((obj.get("spec") or {}).get("replicas", 1))
    if want == 0:
        return True, ""
    status = obj.get("status") or {}
    if expected.kind in GROVE_CHILDREN:
        # Grove's children: ready pods of a clique, available (whole) groups of a scaling group.
        field = GROVE_CHILDREN[expected.kind]
        have = int(status.get(field, 0))
        if have < want:
            noun = "pods ready" if expected.kind == "PodClique" else "groups available"
            return False, f"{have}/{want} {noun}"
        return True, ""
    if expected.kind == "LeaderWorkerSet":
        # LWS's status has no observedGeneration: ready groups and `Available`, as Dynamo.
        ready = status.get("readyReplicas", 0)
        if ready < want or _condition(obj, "Available") != "True":
            return False, f"{ready}/{want} groups ready"
        return True, ""
    generation = obj.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False, f"{expected.kind} {expected.name} has not observed generation {generation}"
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < want:
        return False, f"{updated}/{want} replicas updated"
    if available < want or _condition(obj, "Available") != "True":
        return False, f"{available}/{want} replicas available"
    return True, ""


def service_status(expected: Workload, obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """`status.services[name]` (ServiceReplicaStatus) from the workload's own status."""
    status = (obj or {}).get("status") or {}
    out: dict[str, Any] = {
        "componentKind": expected.kind,
        "componentName": expected.name,
        "replicas": int(status.get("replicas", 0)),
        "updatedReplicas": int(status.get("updatedReplicas", 0)),
        "readyReplicas": int(status.get("readyReplicas", 0)),
    }
    if expected.kind in ("Deployment", "PodCliqueScalingGroup"):
        out["availableReplicas"] = int(status.get("availableReplicas", 0))
    return out


def ready_condition(
    *,
    ok: bool,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
    previous: list[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The `Ready` condition; its lastTransitionTime moves only when its status changes."""
    status = "True" if ok else "False"
    transition = now
    for old in previous or []:
        if old.get("type") == READY and old.get("status") == status:
            transition = old.get("lastTransitionTime") or now
    cond: dict[str, Any] = {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def graph_status(
    expected: list[Workload],
    live: Mapping[str, Mapping[str, Any] | None],
    *,
    now: str,
    generation: int | None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The DGD status: `successful` once every service's workload is ready, else `pending`
    with the reasons in the `Ready` condition message."""
    services = {w.service: service_status(w, live.get(w.service)) for w in expected}
    problems = []
    for w in expected:
        ok, why = workload_ready(w, live.get(w.service))
        if not ok:
            problems.append(f"{w.service}: {why}")
    ok = not problems
    message = "All resources are ready" if ok else "Resources not ready: " + "; ".join(problems)
    condition = ready_condition(
        ok=ok,
        reason=REASON_READY if ok else REASON_NOT_READY,
        message=message,
        now=now,
        generation=generation,
        previous=(previous or {}).get("conditions"),
    )
    status: dict[str, Any] = {
        "state": "successful" if ok else "pending",
        "conditions": [condition],
        "services": services,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def failed_status(
    message: str,
    *,
    reason: str,
    now: str,
    generation: int | None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """State `failed` with the reason (e.g. ValidationFailed) and the message naming the field."""
    condition = ready_condition(
        ok=False,
        reason=reason,
        message=message,
        now=now,
        generation=generation,
        previous=(previous or {}).get("conditions"),
    )
    status: dict[str, Any] = {"state": "failed", "conditions": [condition]}
    if generation is not None:
        status["observedGeneration"] = generation
    return status
