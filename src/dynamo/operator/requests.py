"""The DynamoGraphDeploymentRequest state machine, one step at a time:

    ""/Initializing -> Pending -> Profiling -> Deploying (autoApply) -> Ready
    invalid spec -> Failed;  Job failed -> Failed;  graph deleted -> DeploymentDeleted

`step` reads the request and what it made (Job, output ConfigMap, graph) and returns the next
status and the events of the transition; the kopf handlers write both and call it again until
the state stops moving. Every step is idempotent: objects have deterministic names, a Job or
graph that exists is adopted, never made twice. Validation is `request_validation`; reading
the profiler's output, `request_output`; the Job and its inputs, `profiling`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamo.operator.config import OperatorConfig
from dynamo.operator.profiling import (
    DGDR_KIND,
    JOB_API_VERSION,
    REQUEST_LABEL,
    REQUEST_NAMESPACE_LABEL,
    job_name,
    output_configmap_name,
    profiling_objects,
    request_labels,
)
from dynamo.operator.reconcile import DGD_API_VERSION, DGD_KIND, apply_object, utc_now
from dynamo.operator.request_output import (
    CONFIG_KEY,
    MOCKER_CONFIG_KEY,
    generated_graph,
    parse_output,
    summary,
)
from dynamo.operator.request_validation import RequestFailedError, validate
from dynamo.runtime.kube import KubeApiError, KubeClient

# States after which the spec may no longer change (Dynamo's rule: delete and re-create).
IMMUTABLE_STATES = frozenset({"Profiling", "Deploying", "Ready", "DeploymentDeleted"})
TERMINATION_MESSAGE_CHARS = 1000
# Reasons a container waits that it will not get over by itself (surfaced while profiling).
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Step:
    """The status after one step and what to say about it (no events: nothing happened)."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)


# ---- status helpers --------------------------------------------------------------------------


def set_condition(
    status: dict[str, Any],
    kind: str,
    ok: bool | None,
    reason: str,
    message: str,
    generation: int | None,
) -> None:
    """Set condition `kind` (True/False/Unknown); its lastTransitionTime moves only when its
    status changes."""
    value = "Unknown" if ok is None else str(ok)
    conditions = [dict(c) for c in status.get("conditions") or []]
    old = next((c for c in conditions if c.get("type") == kind), None)
    transition = utc_now()
    if old is not None and old.get("status") == value:
        transition = old.get("lastTransitionTime") or transition
    new: dict[str, Any] = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    status["conditions"] = [c for c in conditions if c.get("type") != kind] + [new]


def _generation(body: Mapping[str, Any]) -> int | None:
    value = body.get("metadata", {}).get("generation")
    return int(value) if value is not None else None


def _fail(status: dict[str, Any], exc: RequestFailedError, generation: int | None) -> Step:
    status["state"] = "Failed"
    set_condition(status, exc.condition, False, exc.reason, str(exc), generation)
    return Step(status, [Event("Warning", exc.reason, str(exc))])


# ---- the profiling Job -----------------------------------------------------------------------


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


async def _termination_message(api: KubeClient, job: Mapping[str, Any]) -> str:
    """The profiler's own last word: the termination message of the Job's newest terminated
    profiler container (its reason, else its exit code)."""
    meta = job["metadata"]
    pods = await api.list("v1", "Pod", meta["namespace"], {"job-name": meta["name"]})
    newest: tuple[str, str] | None = None
    for pod in pods.items:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") != "profiler" or not term:
                continue
            text = str(term.get("message") or "").strip()
            if not text:
                text = f"exit code {term.get('exitCode')} ({term.get('reason') or 'no reason'})"
            when = str(term.get("finishedAt") or "")
            if newest is None or when >= newest[0]:
                newest = (when, text)
    if newest is None:
        return ""
    return newest[1][-TERMINATION_MESSAGE_CHARS:]


async def _stuck_pod(api: KubeClient, job: Mapping[str, Any]) -> str:
    """Why the Job's pod waits, when it cannot start on its own (image, secret, config)."""
    meta = job["metadata"]
    pods = await api.list("v1", "Pod", meta["namespace"], {"job-name": meta["name"]})
    for pod in pods.items:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                why = f"pod {pod['metadata']['name']}: {waiting['reason']}"
                return f"{why}: {waiting['message']}" if waiting.get("message") else why
    return ""


async def _job_failure(api: KubeClient, job: Mapping[str, Any]) -> str:
    cond = _job_condition(job, "Failed") or {}
    reason = cond.get("reason") or "Failed"
    what = f"Job {job['metadata']['name']} failed: {reason}"
    if cond.get("message"):
        what += f" ({cond['message']})"
    last = await _termination_message(api, job)
    return f"{what}; profiler: {last}" if last else what


# ---- the steps -------------------------------------------------------------------------------


async def _start_profiling(
    api: KubeClient, body: Mapping[str, Any], config: OperatorConfig, status: dict[str, Any]
) -> Step:
    generation = _generation(body)
    objects = profiling_objects(body, config)
    job = objects[-1]
    for obj in objects[:-1]:
        await apply_object(api, obj)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    live = await api.get(JOB_API_VERSION, "Job", name, namespace)
    if live is None:
        try:
            await api.create(job)
            verb = "created"
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            verb = "adopted"
    else:
        verb = "adopted"
    status["state"] = "Profiling"
    message = f"Job {name} {verb}; profiling"
    set_condition(status, "Profiling", False, "ProfilingRunning", message, generation)
    return Step(status, [Event("Normal", "ProfilingStarted", message)])


async def _after_profiling(
    api: KubeClient, body: Mapping[str, Any], status: dict[str, Any]
) -> Step:
    meta = body["metadata"]
    generation = _generation(body)
    name, namespace = job_name(meta["name"]), meta["namespace"]
    job = await api.get(JOB_API_VERSION, "Job", name, namespace)
    out_name = output_configmap_name(meta["name"])
    if job is not None and _job_condition(job, "Failed") is not None:
        raise RequestFailedError("Profiling", "ProfilingFailed", await _job_failure(api, job))
    if job is not None and _job_condition(job, "Complete") is None:
        # still running: say why when its pod cannot start (no event: no transition)
        stuck = await _stuck_pod(api, job)
        message = f"Job {name} is running" + (f"; {stuck}" if stuck else "")
        set_condition(status, "Profiling", False, "ProfilingRunning", message, generation)
        return Step(status)
    out = await api.get("v1", "ConfigMap", out_name, namespace)
    if out is None:
        why = "completed" if job is not None else "is gone"
        raise RequestFailedError(
            "Profiling",
            "NoProfilingOutput",
            f"Job {name} {why} but ConfigMap {out_name} does not exist",
        )
    spec = body.get("spec") or {}
    key = MOCKER_CONFIG_KEY if spec.get("useMocker") else CONFIG_KEY
    output = parse_output(out.get("data") or {}, key, f"ConfigMap {out_name}")
    graph = generated_graph(body, output)
    status["profilingResults"] = f"configmap/{out_name}"
    status["generatedDeployment"] = graph
    set_condition(
        status, "Profiling", True, "ProfilingSucceeded", f"Job {name} completed", generation
    )
    gname = f"{graph['metadata']['namespace']}/{graph['metadata']['name']}"
    chosen = summary(output.results)
    generated = f"graph {gname} from {key}" + (f": {chosen}" if chosen else "")
    set_condition(status, "SpecGenerated", True, "SpecGenerated", generated, generation)
    done = f"Job {name} completed; {generated}"
    events = [Event("Normal", "ProfilingSucceeded", done)]
    if spec.get("autoApply"):
        status["state"] = "Deploying"
        status["deployment"] = {
            "name": graph["metadata"]["name"],
            "namespace": graph["metadata"]["namespace"],
            "created": False,
        }
    else:
        status["state"] = "Ready"
        events.append(Event("Normal", "Ready", f"graph {gname} generated; autoApply is off"))
    return Step(status, events)


def _ours(graph: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    labels = graph.get("metadata", {}).get("labels") or {}
    meta = body["metadata"]
    return (
        labels.get(REQUEST_LABEL) == meta["name"]
        and labels.get(REQUEST_NAMESPACE_LABEL) == meta["namespace"]
    )


async def _create_graph(
    api: KubeClient, body: Mapping[str, Any], status: dict[str, Any]
) -> tuple[dict[str, Any], list[Event]]:
    """Create (or adopt) the generated graph and the ConfigMaps it needs; the ConfigMaps are
    owned by the graph, the graph by nobody (it outlives the request, as in Dynamo)."""
    meta = body["metadata"]
    graph = dict(status["generatedDeployment"])
    gmeta = graph["metadata"]
    name, namespace = gmeta["name"], gmeta["namespace"]
    live = await api.get(DGD_API_VERSION, DGD_KIND, name, namespace)
    verb = "adopted"
    if live is None:
        try:
            live = await api.create(graph)
            verb = "created"
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            live = await api.get(DGD_API_VERSION, DGD_KIND, name, namespace)
    if live is None or not _ours(live, body):
        raise RequestFailedError(
            "DeploymentReady",
            "DeploymentConflict",
            f"DynamoGraphDeployment {namespace}/{name} exists and was not made by this request",
        )
    out_name = output_configmap_name(meta["name"])
    out = await api.get("v1", "ConfigMap", out_name, meta["namespace"])
    spec = body.get("spec") or {}
    key = MOCKER_CONFIG_KEY if spec.get("useMocker") else CONFIG_KEY
    extras = parse_output((out or {}).get("data") or {}, key, out_name).extras if out else []
    owner = {
        "apiVersion": DGD_API_VERSION,
        "kind": DGD_KIND,
        "name": name,
        "uid": live["metadata"]["uid"],
        "controller": True,
    }
    for extra in extras:
        emeta = extra.get("metadata") or {}
        await apply_object(
            api,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": emeta["name"],
                    "namespace": namespace,
                    "labels": {
                        **(emeta.get("labels") or {}),
                        **request_labels(meta["name"], meta["namespace"]),
                    },
                    "ownerReferences": [owner],
                },
                "data": dict(extra.get("data") or {}),
            },
        )
    events = [
        Event("Normal", "DeploymentCreated", f"DynamoGraphDeployment {namespace}/{name} {verb}")
    ]
    return live, events


async def _track_graph(api: KubeClient, body: Mapping[str, Any], status: dict[str, Any]) -> Step:
    generation = _generation(body)
    deployment = dict(status.get("deployment") or {})
    name, namespace = deployment["name"], deployment["namespace"]
    events: list[Event] = []
    live = await api.get(DGD_API_VERSION, DGD_KIND, name, namespace)
    if live is None and deployment.get("created"):
        status["state"] = "DeploymentDeleted"
        deployment["state"] = "deleted"
        status["deployment"] = deployment
        message = f"DynamoGraphDeployment {namespace}/{name} was deleted"
        set_condition(status, "DeploymentReady", False, "DeploymentDeleted", message, generation)
        return Step(status, [Event("Warning", "DeploymentDeleted", message)])
    if live is None or not deployment.get("created"):
        live, events = await _create_graph(api, body, status)
        deployment["created"] = True
    graph_state = str((live.get("status") or {}).get("state") or "pending")
    deployment["state"] = graph_state
    status["deployment"] = deployment
    where = f"DynamoGraphDeployment {namespace}/{name}"
    if graph_state == "successful":
        set_condition(
            status, "DeploymentReady", True, "DeploymentReady", f"{where} is ready", generation
        )
        if status.get("state") != "Ready":
            status["state"] = "Ready"
            events.append(Event("Normal", "Ready", f"{where} is ready"))
    else:
        message = f"{where} is {graph_state}"
        set_condition(status, "DeploymentReady", False, "DeploymentNotReady", message, generation)
        if status.get("state") == "Ready":
            status["state"] = "Deploying"
            events.append(Event("Warning", "DeploymentNotReady", message))
    return Step(status, events)


async def step(api: KubeClient, body: Mapping[str, Any], config: OperatorConfig) -> Step:
    """One transition of the request `body` (or none: `Step.events` empty and the status as
    it was, bar refreshed fields). Raises `KubeApiError` (retry later)."""
    status: dict[str, Any] = json.loads(json.dumps(body.get("status") or {}))
    state = status.get("state") or ""
    generation = _generation(body)
    try:
        if state in ("", "Initializing"):
            await validate(api, body, config)
            status["state"] = "Pending"
            status["backend"] = (body.get("spec") or {}).get("backend")
            if generation is not None:
                status["observedGeneration"] = generation
            set_condition(status, "Validation", True, "SpecValid", "spec is valid", generation)
            return Step(status, [Event("Normal", "Validated", "spec is valid; profiling next")])
        if state == "Pending":
            return await _start_profiling(api, body, config, status)
        if state == "Profiling":
            return await _after_profiling(api, body, status)
        if state == "Deploying" or (state == "Ready" and status.get("deployment")):
            return await _track_graph(api, body, status)
    except RequestFailedError as exc:
        if generation is not None:
            status["observedGeneration"] = generation
        return _fail(status, exc, generation)
    return Step(status)


def spec_change(body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Event | None]:
    """What a spec change does: before profiling, or after a failed validation, the request
    starts again (the new status); once profiling started it is refused (the event)."""
    status = dict(body.get("status") or {})
    state = status.get("state") or ""
    if state in IMMUTABLE_STATES or (state == "Failed" and _profiling_started(status)):
        return None, Event(
            "Warning",
            "SpecChangeRejected",
            f"the spec cannot change in state {state} (profiling already started); "
            f"delete this {DGDR_KIND} and create a new one",
        )
    if state in ("Pending", "Failed"):
        return {"state": "Initializing"}, None
    return None, None


def _profiling_started(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Profiling" for c in status.get("conditions") or [])
