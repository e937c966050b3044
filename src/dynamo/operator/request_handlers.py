"""kopf handlers of DynamoGraphDeploymentRequests: a request is advanced (`requests.step`,
until its state stops moving) when it is created or resumed, when its profiling Job or pod
changes, and when the graph it created changes or is deleted. A spec change once profiling
started is refused with a `SpecChangeRejected` event. One lock per request keeps the steps in
order."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import kopf

from dynamo.operator.config import OperatorConfig
from dynamo.operator.kube import FIELD_MANAGER
from dynamo.operator.profiling import (
    APP_LABEL,
    DGDR_API_VERSION,
    DGDR_KIND,
    DGDR_PLURAL,
    PROFILER_APP,
    REQUEST_LABEL,
    REQUEST_NAMESPACE_LABEL,
)
from dynamo.operator.reconcile import utc_now
from dynamo.operator.requests import Event, spec_change, step
from dynamo.runtime.kube import KubeApiError, KubeClient

GROUP, VERSION = DGDR_API_VERSION.split("/")
MAX_STEPS = 8  # Initializing -> Pending -> Profiling -> Deploying -> Ready is 4
RETRY_DELAY_S = 10.0

Logger = logging.Logger | logging.LoggerAdapter[Any]


async def post_event(api: KubeClient, body: Mapping[str, Any], event: Event) -> None:
    """A core/v1 Event about the request (what `kubectl describe dgdr` lists)."""
    meta = body["metadata"]
    now = utc_now()
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": DGDR_API_VERSION,
                "kind": DGDR_KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
    )


def register_request_handlers(
    registry: kopf.OperatorRegistry, api: KubeClient, config: OperatorConfig
) -> None:
    locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def advance(name: str, namespace: str, logger: Logger) -> None:
        async with locks.setdefault((namespace, name), asyncio.Lock()):
            for _ in range(MAX_STEPS):
                body = await api.get(DGDR_API_VERSION, DGDR_KIND, name, namespace)
                if body is None:
                    return
                result = await step(api, body, config)
                # Events first: whoever sees the new state finds its events already there.
                for event in result.events:
                    logger.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
                    await post_event(api, body, event)
                if result.status != (body.get("status") or {}):
                    await api.patch(
                        DGDR_API_VERSION,
                        DGDR_KIND,
                        name,
                        namespace,
                        {"status": result.status},
                        subresource="status",
                    )
                if not result.events:
                    return

    async def advance_or_retry(name: str, namespace: str, logger: Logger) -> None:
        try:
            await advance(name, namespace, logger)
        except KubeApiError as exc:
            logger.warning("request %s/%s: %s", namespace, name, exc)
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc

    @kopf.on.resume(GROUP, VERSION, DGDR_PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, DGDR_PLURAL, registry=registry)
    async def request_created(body: kopf.Body, logger: Logger, **_: Any) -> None:
        meta = body.get("metadata", {})
        await advance_or_retry(meta["name"], meta["namespace"], logger)

    @kopf.on.update(GROUP, VERSION, DGDR_PLURAL, field="spec", registry=registry)
    async def request_changed(body: kopf.Body, logger: Logger, **_: Any) -> None:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        restart, refusal = spec_change(body)
        try:
            if refusal is not None:
                logger.warning("%s/%s: %s", namespace, name, refusal.message)
                await post_event(api, body, refusal)
                return
            if restart is not None:
                await api.patch(
                    DGDR_API_VERSION,
                    DGDR_KIND,
                    name,
                    namespace,
                    {"status": restart},
                    subresource="status",
                )
        except KubeApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
        await advance_or_retry(name, namespace, logger)

    @kopf.on.event("batch", "v1", "jobs", labels={REQUEST_LABEL: kopf.PRESENT}, registry=registry)
    @kopf.on.event(
        "", "v1", "pods", labels={REQUEST_LABEL: kopf.PRESENT, APP_LABEL: PROFILER_APP},
        registry=registry,
    )  # fmt: skip
    async def job_changed(body: kopf.Body, logger: Logger, **_: Any) -> None:
        labels = body.get("metadata", {}).get("labels") or {}
        namespace = labels.get(REQUEST_NAMESPACE_LABEL) or body.get("metadata", {}).get("namespace")
        if namespace:
            await _quietly(advance(labels[REQUEST_LABEL], namespace, logger), logger)

    @kopf.on.event(
        GROUP,
        VERSION,
        "dynamographdeployments",
        labels={REQUEST_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def graph_changed(body: kopf.Body, logger: Logger, **_: Any) -> None:
        labels = body.get("metadata", {}).get("labels") or {}
        namespace = labels.get(REQUEST_NAMESPACE_LABEL)
        if namespace:
            await _quietly(advance(labels[REQUEST_LABEL], namespace, logger), logger)


async def _quietly(work: Any, logger: Logger) -> None:
    """Event handlers are not retried by kopf: a failed step is logged, and the next event
    (or the operator's resume) tries again."""
    try:
        await work
    except KubeApiError as exc:
        logger.warning("cannot advance request: %s", exc)
