"""The kopf side of the operator: thin handlers that call `reconcile`, and `run` to start it.

A DGD is reconciled on create, update and operator start (resume); a change of one of its
workloads (Deployment/LeaderWorkerSet status) refreshes its status. DGDRs are advanced by
`request_handlers`. Deleting a DGD needs no
handler: every child carries an owner reference and the API server collects it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from dynamo.operator.config import OperatorConfig
from dynamo.operator.kube import connect
from dynamo.operator.labels import GRAPH_LABEL
from dynamo.operator.metrics import OperatorMetrics, serve_metrics
from dynamo.operator.reconcile import (
    DGD_API_VERSION,
    DGD_KIND,
    MissingSecretError,
    observed_status,
    reconcile_graph,
    utc_now,
)
from dynamo.operator.request_handlers import register_request_handlers
from dynamo.operator.status import (
    REASON_INVALID,
    REASON_MISSING_SECRET,
    REASON_RECONCILE_FAILED,
    failed_status,
)
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.kube import KubeApiError, KubeClient, KubeConnection

GROUP, VERSION = DGD_API_VERSION.split("/")
DGD_PLURAL = "dynamographdeployments"
KOPF_PREFIX = "operator.dynamo.nvidia.com"
RETRY_DELAY_S = 10.0

Logger = logging.Logger | logging.LoggerAdapter[Any]


def operator_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    """kopf settings: no peering, handler progress in our own annotations, no cluster-wide
    scanning when restricted to one namespace (a Role cannot list namespaces or CRDs)."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    if config.namespace:
        settings.scanning.disabled = True
    return settings


def _same_status(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    old = old or {}
    return all(old.get(key) == value for key, value in new.items())


def _owner_graph(body: Mapping[str, Any]) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == DGD_KIND and ref.get("controller"):
            return str(ref.get("name"))
    return None


def build_registry(
    api: KubeClient,
    config: OperatorConfig,
    *,
    connection: KubeConnection | None = None,
    metrics: OperatorMetrics | None = None,
) -> kopf.OperatorRegistry:
    """All handlers in a registry of their own (no global state): kopf logs in to
    `connection`, else with the in-cluster service account or the kubeconfig. Reconciles are
    counted in `metrics`."""
    registry = kopf.OperatorRegistry()
    counted = metrics or OperatorMetrics()
    if connection is None:
        kopf.on.login(registry=registry)(kopf.login_with_service_account)
        kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    else:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(
                server=connection.server,
                token=connection.token,
                scheme="Bearer" if connection.token else None,
                insecure=connection.insecure,
                ca_path=connection.ca_path,
            )

    # One lock per graph: every status write reads the workloads and writes under it, so an
    # older view is never written after a newer one (kopf runs each object in its own worker).
    status_locks: dict[tuple[str, str], asyncio.Lock] = {}

    @kopf.on.resume(GROUP, VERSION, DGD_PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, DGD_PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, DGD_PLURAL, registry=registry)
    async def reconcile_dgd(body: kopf.Body, patch: kopf.Patch, logger: Logger, **_: Any) -> None:
        with counted.reconcile(DGD_KIND) as outcome:
            await _reconcile_dgd(body, patch, logger, outcome)

    async def _reconcile_dgd(
        body: kopf.Body, patch: kopf.Patch, logger: Logger, outcome: dict[str, str]
    ) -> None:
        generation = body.get("metadata", {}).get("generation")
        previous = dict(body.get("status") or {})
        try:
            status = await reconcile_graph(api, body, config)
        except ConfigError as exc:
            outcome["result"] = "invalid"
            logger.error("invalid DynamoGraphDeployment: %s", exc)
            kopf.warn(body, reason=REASON_INVALID, message=str(exc))
            status = failed_status(
                str(exc),
                reason=REASON_INVALID,
                now=utc_now(),
                generation=generation,
                previous=previous,
            )
            patch.status.update({**status, "services": None})
            return  # a new spec triggers the next attempt
        except MissingSecretError as exc:
            outcome["result"] = "retry"
            kopf.warn(body, reason=REASON_MISSING_SECRET, message=str(exc))
            status = failed_status(
                str(exc),
                reason=REASON_MISSING_SECRET,
                now=utc_now(),
                generation=generation,
                previous=previous,
            )
            patch.status.update(status)
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
        except KubeApiError as exc:
            outcome["result"] = "retry"
            status = failed_status(
                str(exc),
                reason=REASON_RECONCILE_FAILED,
                now=utc_now(),
                generation=generation,
                previous=previous,
            )
            patch.status.update(status)
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc
        meta = body.get("metadata", {})
        name, namespace = meta.get("name"), meta.get("namespace")
        if name is None or namespace is None:
            patch.status.update(status)
            return
        async with status_locks.setdefault((namespace, name), asyncio.Lock()):
            await refresh_status(name, namespace, logger, after_reconcile=True)

    @kopf.on.event(
        "apps", "v1", "deployments", labels={GRAPH_LABEL: kopf.PRESENT}, registry=registry
    )
    @kopf.on.event(
        "leaderworkerset.x-k8s.io",
        "v1",
        "leaderworkersets",
        labels={GRAPH_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def workload_changed(
        body: kopf.Body, namespace: str | None, logger: Logger, **_: Any
    ) -> None:
        name = _owner_graph(body)
        if name is None or namespace is None:
            return
        # kopf handles each workload in its own worker: without this lock two workloads of one
        # graph could read the status concurrently and the older view could be written last.
        async with status_locks.setdefault((namespace, name), asyncio.Lock()):
            await refresh_status(name, namespace, logger)

    if config.grove_enabled:

        @kopf.on.event(
            "grove.io",
            "v1alpha1",
            "podcliques",
            labels={GRAPH_LABEL: kopf.PRESENT},
            registry=registry,
        )
        async def grove_child_changed(
            body: kopf.Body, namespace: str | None, logger: Logger, **_: Any
        ) -> None:
            # Grove's PodCliques belong to the PodCliqueSet, not the DGD: the graph label (which
            # Grove copies from the clique template) names the graph.
            name = body.get("metadata", {}).get("labels", {}).get(GRAPH_LABEL)
            if name is None or namespace is None:
                return
            async with status_locks.setdefault((namespace, name), asyncio.Lock()):
                await refresh_status(name, namespace, logger)

    async def refresh_status(
        name: str, namespace: str, logger: Logger, *, after_reconcile: bool = False
    ) -> None:
        """Write the DGD status from the workloads as they are now. A `failed` graph keeps its
        status until the DGD handler has reconciled it again (`after_reconcile`)."""
        try:
            dgd = await api.get(DGD_API_VERSION, DGD_KIND, name, namespace)
            if dgd is None:
                return
            if not after_reconcile and (dgd.get("status") or {}).get("state") == "failed":
                return
            status = await observed_status(api, dgd, config)
            if _same_status(status, dgd.get("status")):
                return
            await api.patch(
                DGD_API_VERSION,
                DGD_KIND,
                name,
                namespace,
                {"status": status},
                subresource="status",
            )
        except ConfigError:
            return  # the DGD handler reports invalid graphs
        except KubeApiError as exc:
            logger.warning("cannot refresh status of %s/%s: %s", namespace, name, exc)

    register_request_handlers(registry, api, config)
    return registry


async def run(
    config: OperatorConfig,
    *,
    connection: KubeConnection | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until `stop_flag` is set (or the task is cancelled).

    kopf cancels every task started in its event loop while it ran when it stops, so an
    operator embedded in a program (or a test) runs in a thread with a loop of its own, with
    `threading.Event` flags."""
    api = await connect(connection)
    metrics = OperatorMetrics()
    metrics_server = None
    try:
        if config.metrics_port:
            metrics_server = await serve_metrics(metrics, config.metrics_port)
        registry = build_registry(api, config, connection=connection, metrics=metrics)
        liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
        await kopf.operator(
            registry=registry,
            settings=operator_settings(config),
            standalone=True,
            clusterwide=not config.namespace,
            namespaces=[config.namespace] if config.namespace else (),
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if metrics_server is not None:
            await metrics_server.cleanup()
        await api.close()
