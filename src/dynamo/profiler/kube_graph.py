"""Thorough profiling on Kubernetes: one candidate engine as a trial DGD.

`KubeGraph` creates DynamoGraphDeployment `<dgdr>-trial-tp<N>` (`dgd.trial_graph`: a Frontend
and one aggregated worker) in the profiler's namespace through the Kubernetes API, waits until
the operator reports it `successful` and its frontend lists the model, measures through the
frontend Service (`http://<dgd>-frontend.<ns>.svc.cluster.local:8000`, the Service our
operator makes for a frontend), and deletes it in `stop`. The DGD carries the request's labels
(`dgdr.nvidia.com/name`, `dgdr.nvidia.com/namespace`) and `nvidia.com/dynamo-profiler-trial`,
and is owned by the DGDR when the Job's env names it (`DGDR_NAME`, `DGDR_UID`), so deleting the
request removes a trial a killed profiler left behind.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from dynamo.deploy.builder import FRONTEND_HTTP_PORT, component_k8s_name
from dynamo.profiler.config import ProfileRequest
from dynamo.profiler.dgd import trial_graph
from dynamo.profiler.hardware import Engine
from dynamo.runtime.errors import ConfigError, DynamoError
from dynamo.runtime.kube import CustomKind, KubeApiError, KubeClient, KubeConnection

FIELD_MANAGER = "dynamo-profiler"
DGD_API_VERSION = "nvidia.com/v1alpha1"
DGD_KIND = "DynamoGraphDeployment"
DGD = CustomKind(DGD_API_VERSION, DGD_KIND, "dynamographdeployments")
REQUEST_LABEL = "dgdr.nvidia.com/name"
REQUEST_NAMESPACE_LABEL = "dgdr.nvidia.com/namespace"
TRIAL_LABEL = "nvidia.com/dynamo-profiler-trial"  # value: tp<N>
# `<dgd>-dynamo-discovery` and `<dgd>-frontend` must stay DNS labels (63 characters).
MAX_TRIAL_NAME = 63 - len("-dynamo-discovery")
POLL_S = 2.0
READY_STATE = "successful"  # the operator's `status.state` of a ready graph

UrlFor = Callable[[str, str], str]


def trial_name(request: str, gpus: int) -> str:
    """`<request>-trial-tp<N>`, the request's part cut to keep every derived name valid."""
    suffix = f"-trial-tp{gpus}"
    return request[: MAX_TRIAL_NAME - len(suffix)].rstrip("-.") + suffix


def frontend_url(dgd: str, namespace: str) -> str:
    """The in-cluster URL of a graph's frontend Service."""
    service = component_k8s_name(dgd, "Frontend")
    return f"http://{service}.{namespace}.svc.cluster.local:{FRONTEND_HTTP_PORT}"


def trial_metadata(
    name: str, namespace: str, request: str, gpus: int, env: Mapping[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {
            REQUEST_LABEL: request,
            REQUEST_NAMESPACE_LABEL: namespace,
            TRIAL_LABEL: f"tp{gpus}",
        },
    }
    if env.get("DGDR_NAME") and env.get("DGDR_UID"):
        meta["ownerReferences"] = [
            {
                "apiVersion": "nvidia.com/v1alpha1",
                "kind": "DynamoGraphDeploymentRequest",
                "name": env["DGDR_NAME"],
                "uid": env["DGDR_UID"],
            }
        ]
    return meta


def _describe(status: Mapping[str, Any] | None) -> str:
    if not status:
        return "no status yet (is the operator running?)"
    text = f"state {status.get('state') or 'unset'}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("message"):
            text += f", Ready: {cond['message']}"
    return text


class KubeGraph:
    """One candidate as a trial DGD; `stop` deletes it (idempotent, never raises)."""

    def __init__(
        self,
        request: ProfileRequest,
        eng: Engine,
        *,
        connection: KubeConnection | None = None,
        url_for: UrlFor = frontend_url,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.engine, self.model = eng, request.model
        self._connection = connection
        owner = env.get("DGDR_NAME") or request.name
        self.name = trial_name(owner, eng.gpus)
        # the profiler's namespace (its Role's), not the generated graph's
        self.namespace = env.get("DGDR_NAMESPACE") or ""
        self._created = False
        self.base_url = ""
        asyncio.run(self._deploy(request, owner, url_for, env, request.deployment_timeout_s))

    async def _client(self) -> KubeClient:
        try:
            return await KubeClient.connect(
                self._connection, field_manager=FIELD_MANAGER, custom_kinds=[DGD]
            )
        except ConfigError as exc:
            raise DynamoError(f"thorough profiling on Kubernetes: {exc}") from exc

    @property
    def what(self) -> str:
        return f"DynamoGraphDeployment {self.namespace}/{self.name}"

    async def _deploy(
        self,
        request: ProfileRequest,
        owner: str,
        url_for: UrlFor,
        env: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        api = await self._client()
        try:
            self.namespace = self.namespace or api.namespace
            graph = trial_graph(request, self.engine, self.name)
            graph["metadata"] = trial_metadata(
                self.name, self.namespace, owner, self.engine.gpus, env
            )
            await self._create(api, graph, deadline)
            await self._wait_ready(api, deadline, timeout_s)
            self.base_url = url_for(self.name, self.namespace)
            await self._wait_serving(deadline, timeout_s)
        except BaseException:
            await self._delete(api)
            raise
        finally:
            await api.close()

    async def _create(self, api: KubeClient, graph: dict[str, Any], deadline: float) -> None:
        # Set before the call: a SIGTERM while the create is in flight may come after the API
        # server made the object, and the clean-up must still delete it (a 404 is nothing).
        self._created = True
        try:
            await api.create(graph)
        except KubeApiError as exc:
            if exc.status != 409:
                raise DynamoError(f"cannot create {self.what}: {exc}") from exc
            # a trial a killed profiler left (a retried Job): start from a fresh one
            await api.delete(DGD_API_VERSION, DGD_KIND, self.name, self.namespace)
            while await api.get(DGD_API_VERSION, DGD_KIND, self.name, self.namespace):
                if time.monotonic() > deadline:
                    raise DynamoError(f"the old {self.what} is still being deleted") from exc
                await asyncio.sleep(POLL_S)
            await api.create(graph)
        _log(f"created {self.what}")

    async def _wait_ready(self, api: KubeClient, deadline: float, timeout_s: float) -> None:
        status: Mapping[str, Any] | None = None
        while True:
            live = await api.get(DGD_API_VERSION, DGD_KIND, self.name, self.namespace)
            if live is None:
                raise DynamoError(f"{self.what} was deleted while the profiler waited for it")
            status = live.get("status")
            state = (status or {}).get("state")
            if state == READY_STATE:
                return
            if state == "failed":
                raise DynamoError(f"{self.what} failed: {_describe(status)}")
            if time.monotonic() > deadline:
                raise DynamoError(
                    f"{self.what} was not ready after {timeout_s:g} s "
                    f"(deployment.deploymentTimeout); last status: {_describe(status)}"
                )
            await asyncio.sleep(POLL_S)

    async def _wait_serving(self, deadline: float, timeout_s: float) -> None:
        """The graph is ready once its pods are; the frontend lists the model once the worker
        registered with it."""
        last = "no answer"
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    async with session.get(f"{self.base_url}/v1/models") as resp:
                        body = await resp.text()
                        if resp.status == 200 and self.model in body:
                            return
                        last = f"HTTP {resp.status}: {body[:200]}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise DynamoError(
                        f"{self.what} is ready but its frontend {self.base_url} did not list "
                        f"{self.model} within {timeout_s:g} s (deployment.deploymentTimeout); "
                        f"last answer: {last}"
                    )
                await asyncio.sleep(POLL_S)

    async def _delete(self, api: KubeClient) -> None:
        if not self._created:
            return
        try:
            existed = await api.delete(DGD_API_VERSION, DGD_KIND, self.name, self.namespace)
        except KubeApiError as exc:
            _log(f"cannot delete {self.what}: {exc}; delete it by hand")
            return
        self._created = False
        if existed:
            _log(f"deleted {self.what}")

    def stop(self) -> None:
        if not self._created:
            return

        async def run() -> None:
            api = await self._client()
            try:
                await self._delete(api)
            finally:
                await api.close()

        try:
            asyncio.run(run())
        except DynamoError as exc:
            _log(f"cannot delete {self.what}: {exc}; delete it by hand")


def _log(message: str) -> None:
    print(f"profiler: {message}", file=sys.stderr, flush=True)
