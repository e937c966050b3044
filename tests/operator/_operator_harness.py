"""Run the real operator (kopf, in-process) against the fake API server, and drive it like
`kubectl` would: apply, patch and delete DGDs, and play the Deployment controller."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kubernetes_validate
import yaml
from _crd_schema import known, validate_crd_instance

from dynamo.operator.config import OperatorConfig
from dynamo.operator.handlers import run
from dynamo.runtime.kube import KubeConnection
from dynamo.testing.kube_api import FakeKubeApi, object_path

HERE = Path(__file__).parent
REPO = HERE.parents[1]
GUIDE_DGD = HERE / "guide_dgd.yaml"
DGD_PLURAL = "dynamographdeployments"
# A hang guard for event-driven waits, not a performance assertion.
WAIT_LIMIT_S = 60.0
T = TypeVar("T")

PLURALS = {
    "Deployment": ("apps/v1", "deployments"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io/v1", "leaderworkersets"),
    "PodCliqueSet": ("grove.io/v1alpha1", "podcliquesets"),
    "PodClique": ("grove.io/v1alpha1", "podcliques"),
    "PodCliqueScalingGroup": ("grove.io/v1alpha1", "podcliquescalinggroups"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "DynamoGraphDeployment": ("nvidia.com/v1alpha1", DGD_PLURAL),
    "DynamoGraphDeploymentRequest": ("nvidia.com/v1alpha1", "dynamographdeploymentrequests"),
    "Job": ("batch/v1", "jobs"),
    "Pod": ("v1", "pods"),
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
}


def load_yaml(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], what: str, *, limit_s: float = WAIT_LIMIT_S
) -> T:
    """Poll `probe` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


class Cluster:
    """`kubectl` for the fake API server."""

    def __init__(self, api: FakeKubeApi, session: aiohttp.ClientSession) -> None:
        self.api = api
        self.session = session

    async def _call(
        self, method: str, path: str, body: Any = None, manager: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        params = {"fieldManager": manager} if manager else {}
        async with self.session.request(
            method, path, json=body, headers=headers, params=params
        ) as response:
            return response.status, await response.json(content_type=None)

    async def apply(
        self, obj: Mapping[str, Any], namespace: str, *, manager: str = "kubectl-create"
    ) -> dict[str, Any]:
        """Create `obj` (POST) in `namespace` as field manager `manager`."""
        body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        version, plural = PLURALS[obj["kind"]]
        path = object_path(version, plural, namespace)
        status, payload = await self._call("POST", path, body, manager)
        assert status < 300, payload
        return dict(payload)

    async def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        version, plural = PLURALS[kind]
        status, payload = await self._call("GET", object_path(version, plural, namespace, name))
        return dict(payload) if status == 200 else None

    async def patch(
        self,
        kind: str,
        name: str,
        namespace: str,
        patch: Mapping[str, Any],
        *,
        sub: str = "",
        manager: str = "kubectl-patch",
    ) -> dict[str, Any]:
        """A merge patch of the object (or of its `sub`resource) as field manager `manager`."""
        version, plural = PLURALS[kind]
        path = object_path(version, plural, namespace, name) + (f"/{sub}" if sub else "")
        status, payload = await self._call("PATCH", path, dict(patch), manager)
        assert status < 300, payload
        return dict(payload)

    async def delete(self, kind: str, name: str, namespace: str) -> None:
        version, plural = PLURALS[kind]
        status, payload = await self._call("DELETE", object_path(version, plural, namespace, name))
        assert status < 300, payload

    def objects(self, namespace: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """(kind, name) -> body of every live namespaced object (in `namespace` if given)."""
        out = {}
        for resource, ns, name, body in self.api.live_objects():
            if ns is None or (namespace is not None and ns != namespace):
                continue
            if resource.plural == "events":  # kopf's event posts: not graph objects
                continue
            out[(body.get("kind", ""), name)] = body
        return out

    async def dgd_status(self, name: str, namespace: str) -> dict[str, Any]:
        body = await self.get("DynamoGraphDeployment", name, namespace)
        return dict((body or {}).get("status") or {})

    async def wait_state(self, name: str, namespace: str, state: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            status = await self.dgd_status(name, namespace)
            return status if status.get("state") == state else None

        return await wait_for(probe, f"DGD {namespace}/{name} state {state}")

    async def mark_available(self, name: str, namespace: str) -> None:
        """Play the Deployment controller: every desired replica updated and available."""
        dep = await self.get("Deployment", name, namespace)
        assert dep is not None, f"no Deployment {name}"
        replicas = dep["spec"]["replicas"]
        status = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicas"}],
        }
        await self.patch(
            "Deployment",
            name,
            namespace,
            {"status": status},
            sub="status",
            manager="deployment-controller",
        )


class OperatorThread(threading.Thread):
    """The real operator (kopf, standalone) in a thread with its own event loop, as kopf wants
    when embedded: it cancels every task of its loop on exit."""

    def __init__(self, api: FakeKubeApi, config: OperatorConfig) -> None:
        super().__init__(name="dynamo-operator", daemon=True)
        self.config = config
        self.connection = KubeConnection(server=str(api.url).rstrip("/"), token="t", insecure=True)
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(
                run(
                    self.config,
                    connection=self.connection,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                )
            )
        except BaseException as exc:
            self.error = exc

    async def wait_ready(self) -> None:
        async def probe() -> bool:
            if not self.is_alive() and not self.ready_flag.is_set():
                raise AssertionError(f"the operator stopped: {self.error!r}")
            return self.ready_flag.is_set()

        await wait_for(probe, "the operator to start")

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.join)
        if self.error is not None:
            raise self.error


@contextlib.asynccontextmanager
async def running_operator(
    api: FakeKubeApi, config: OperatorConfig | None = None
) -> AsyncIterator[OperatorThread]:
    """Run the operator against the fake until the block exits (then stop and join it)."""
    thread = OperatorThread(api, config or OperatorConfig(health_port=0))
    thread.start()
    try:
        await thread.wait_ready()
        yield thread
    finally:
        await thread.stop()


def validate_k8s(obj: Mapping[str, Any]) -> None:
    """Check `obj` against Kubernetes 1.33's own schemas (strict: unknown fields fail). A
    LeaderWorkerSet (a CRD) is checked through its pod templates; a PodMonitor, Flux or Argo CD
    object with its CRD's schema (`_crd_schema`)."""
    if known(dict(obj)):
        validate_crd_instance(dict(obj))
        if obj["kind"] == "PodCliqueSet":
            for clique in obj["spec"]["template"]["cliques"]:
                template = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"{obj['metadata']['name']}-{clique['name']}"},
                    "template": {
                        "metadata": {"labels": clique["labels"]},
                        "spec": clique["spec"]["podSpec"],
                    },
                }
                kubernetes_validate.validate(template, "1.33", strict=True)
        return
    if obj["kind"] == "LeaderWorkerSet":
        lws = obj["spec"]["leaderWorkerTemplate"]
        for key in ("leaderTemplate", "workerTemplate"):
            template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{obj['metadata']['name']}-{key}"},
                "template": lws[key],
            }
            kubernetes_validate.validate(template, "1.33", strict=True)
        return
    kubernetes_validate.validate(dict(obj), "1.33", strict=True)
