"""Kubernetes discovery of processes in pods: a record is visible only while its pod is Ready in
an EndpointSlice of a discovery Service. The fake API server runs with the test EndpointSlice
controller; pods are Pod objects whose Ready condition the tests flip."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from _kube_helpers import (
    NS,
    configmap,
    kubeconfig_dict,
    next_event,
    next_events,
    wait_until,
)
from _runtime_helpers import Spawn
from lightkube import KubeConfig

from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.discovery.kubernetes import KubernetesDiscovery, PodIdentity
from dynamo.runtime.discovery.kubernetes.objects import (
    DISCOVERY_LABEL,
    DISCOVERY_SERVICE_LABEL,
    HOLDER_ANNOTATION,
    POD_ANNOTATION,
    POD_UID_ANNOTATION,
    RENEW_ANNOTATION,
    DiscoveryRecord,
    discovery_object,
    parse_record,
    pod_is_ready,
    pod_object_name,
    ready_index,
    ready_pods,
)
from dynamo.runtime.errors import ConfigError
from dynamo.testing.kube_api import FakeKubeApi, KubeHttp, fake_kube_api
from dynamo.testing.kube_endpoints import CountingKubeApi, FakePods, endpoint_slice_controller

SLICES = kmock.resource("discovery.k8s.io", "v1", "endpointslices")


@pytest.fixture(autouse=True)
def _no_pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAME", "POD_UID", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def kube() -> AsyncIterator[CountingKubeApi]:
    async with (
        fake_kube_api(with_dynamo_crds=False, api_type=CountingKubeApi) as api,
        endpoint_slice_controller(api),
    ):
        assert isinstance(api, CountingKubeApi)
        yield api


@pytest.fixture
async def pods(kube: FakeKubeApi) -> AsyncIterator[FakePods]:
    async with aiohttp.ClientSession(base_url=str(kube.url)) as session:
        created = FakePods(KubeHttp(session), NS)
        await created.service()
        yield created


Make = Callable[..., Awaitable[KubernetesDiscovery]]


@pytest.fixture
async def make(kube: FakeKubeApi) -> AsyncIterator[Make]:
    made: list[KubernetesDiscovery] = []

    async def _make(**kw: Any) -> KubernetesDiscovery:
        config = KubeConfig.from_dict(kubeconfig_dict(str(kube.url)))
        discovery = KubernetesDiscovery(kubeconfig=config, write_batch_s=0.05, **kw)
        made.append(discovery)
        await discovery.start()
        return discovery

    yield _make
    for discovery in made:
        await discovery.close()


async def test_pod_keys_are_visible_only_while_the_pod_is_ready(
    kube: CountingKubeApi, pods: FakePods, make: Make
) -> None:
    pod = await pods.create("worker-0", ready=True)
    writer = await make(pod=pod)
    assert writer.liveness == "readiness"
    await writer.put("v1/instances/ns/w/e/1", {"n": 1})
    await writer.put("v1/mdc/ns/w/e/1", {"model": "m"})
    reader = await make()
    watch = reader.watch_prefix("v1/")
    assert await next_events(watch, 2) == [
        WatchEvent("put", "v1/instances/ns/w/e/1", {"n": 1}),
        WatchEvent("put", "v1/mdc/ns/w/e/1", {"model": "m"}),
    ]
    stored = configmap(kube, "dyn-worker-0") or {}
    assert stored["metadata"]["labels"] == {DISCOVERY_LABEL: "true"}
    annotations = stored["metadata"]["annotations"]
    assert RENEW_ANNOTATION not in annotations
    assert annotations[POD_ANNOTATION] == "worker-0"
    assert annotations[POD_UID_ANNOTATION] == pod.uid
    assert stored["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "worker-0", "uid": pod.uid}
    ]

    await pods.set_ready("worker-0", False)
    assert await next_events(watch, 2) == [
        WatchEvent("delete", "v1/instances/ns/w/e/1", None),
        WatchEvent("delete", "v1/mdc/ns/w/e/1", None),
    ]
    assert await reader.get_prefix("v1/") == {}
    await pods.set_ready("worker-0", True)
    assert await next_events(watch, 2) == [
        WatchEvent("put", "v1/instances/ns/w/e/1", {"n": 1}),
        WatchEvent("put", "v1/mdc/ns/w/e/1", {"model": "m"}),
    ]
    assert await reader.get_prefix("v1/instances/") == {"v1/instances/ns/w/e/1": {"n": 1}}

    await pods.delete("worker-0")
    assert await next_events(watch, 2) == [
        WatchEvent("delete", "v1/instances/ns/w/e/1", None),
        WatchEvent("delete", "v1/mdc/ns/w/e/1", None),
    ]
    assert configmap(kube, "dyn-worker-0") is None  # garbage-collected with its pod
    await watch.aclose()


async def test_a_watcher_started_later_sees_only_ready_pods(pods: FakePods, make: Make) -> None:
    ready = await make(pod=await pods.create("worker-0", ready=True))
    starting = await make(pod=await pods.create("worker-1", ready=False))
    await ready.put("v1/instances/a", {"n": 1})
    await starting.put("v1/instances/b", {"n": 2})
    await ready.flush()
    await starting.flush()
    reader = await make()
    assert await reader.get_prefix("v1/") == {"v1/instances/a": {"n": 1}}
    watch = reader.watch_prefix("v1/")
    assert await next_event(watch) == WatchEvent("put", "v1/instances/a", {"n": 1})
    await pods.set_ready("worker-1", True)
    assert await next_event(watch) == WatchEvent("put", "v1/instances/b", {"n": 2})
    await watch.aclose()


async def test_registration_is_one_write_and_a_pod_sends_no_heartbeat(
    kube: CountingKubeApi, pods: FakePods, make: Make
) -> None:
    writer = await make(pod=await pods.create("worker-0", ready=True), ttl_s=0.3)
    for key in ("v1/instances/ns/w/e/1", "v1/mdc/ns/w/e/1", "v1/events/ns/1"):
        await writer.put(key, {"k": key})  # a worker's startup registrations, one by one
    await writer.flush()
    assert kube.writes["configmaps"] == 1
    reader = await make(pod=await pods.create("frontend-0", ready=True))  # registers nothing
    assert len(await reader.get_prefix("v1/")) == 3
    await asyncio.sleep(3.0)  # ten TTLs: no heartbeat is written, and the keys stay
    assert kube.writes["configmaps"] == 1
    assert len(await reader.get_prefix("v1/")) == 3
    await writer.delete("v1/events/ns/1")
    await writer.flush()
    assert kube.writes["configmaps"] == 2
    assert await reader.get_prefix("v1/events/") == {}


async def test_a_process_restarted_in_its_pod_replaces_its_record(
    kube: FakeKubeApi, pods: FakePods, make: Make, spawn: Spawn, tmp_path: Path
) -> None:
    pod = await pods.create("worker-0", ready=True)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig_dict(str(kube.url))))
    env = {
        "DYN_DISCOVERY_BACKEND": "kubernetes",
        "KUBECONFIG": str(path),
        "POD_NAME": pod.name,
        "POD_UID": pod.uid,
        "DYN_KUBE_DISCOVERY_LIVENESS": "readiness",  # what the operator sets
    }
    first = await spawn("register", "v1/instances/ns/w/e/1", env=env)
    reader = await make()
    watch = reader.watch_prefix("v1/")
    assert await next_event(watch) == WatchEvent(
        "put", "v1/instances/ns/w/e/1", {"pid": first.proc.pid}
    )
    # kill -9: the container restarts, and the pod is NotReady until its probe passes again
    await pods.set_ready("worker-0", False)
    assert await next_event(watch) == WatchEvent("delete", "v1/instances/ns/w/e/1", None)
    first.proc.send_signal(signal.SIGKILL)
    await first.proc.wait()
    second = await spawn("register", "v1/instances/ns/w/e/2", env=env)

    async def rewritten() -> bool:
        stored = configmap(kube, "dyn-worker-0") or {}
        holder = stored.get("metadata", {}).get("annotations", {}).get(HOLDER_ANNOTATION, "")
        return holder.endswith(f"/{second.proc.pid}")

    await wait_until(rewritten)
    await pods.set_ready("worker-0", True)
    assert await next_event(watch) == WatchEvent(
        "put", "v1/instances/ns/w/e/2", {"pid": second.proc.pid}
    )
    assert await reader.get_prefix("v1/") == {"v1/instances/ns/w/e/2": {"pid": second.proc.pid}}
    names = sorted(name for _, ns, name, _ in kube.live_objects() if name.startswith("dyn-"))
    assert names == sorted(["dyn-worker-0", reader.name])
    await watch.aclose()


async def test_a_pod_takes_over_a_record_left_under_its_name(
    kube: FakeKubeApi, pods: FakePods, make: Make
) -> None:
    pod = await pods.create("worker-0", ready=True)
    left = discovery_object(
        "dyn-worker-0", data={"old": '{"key":"v1/instances/old","value":{"n":0}}'},
        holder="gone/1", owner=pod, heartbeat=(time.time(), 3600.0),
    )  # fmt: skip
    await pods.http.create(
        {**left, "metadata": {**left["metadata"], "namespace": NS}}, "configmaps"
    )
    reader = await make()
    assert await reader.get_prefix("v1/") == {"v1/instances/old": {"n": 0}}  # a heartbeat record
    writer = await make(pod=pod)  # registers nothing, yet rewrites what it found
    await writer.flush()
    stored = configmap(kube, "dyn-worker-0") or {}
    assert stored["data"] == {}
    annotations = stored["metadata"]["annotations"]
    assert RENEW_ANNOTATION not in annotations and annotations[POD_ANNOTATION] == "worker-0"
    assert await reader.get_prefix("v1/") == {}
    await writer.put("v1/instances/new", {"n": 1})
    await writer.flush()
    assert await reader.get_prefix("v1/") == {"v1/instances/new": {"n": 1}}
    await pods.set_ready("worker-0", False)
    assert await reader.get_prefix("v1/") == {}  # now it follows the pod's readiness


async def test_without_endpointslice_access_pod_records_stay_hidden_and_the_log_says_why(
    kube: FakeKubeApi, pods: FakePods, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dynamo.runtime.discovery.kubernetes")
    for action in (kmock.action.LIST, kmock.action.WATCH):
        kube[action, SLICES] << kmock.KubernetesError(
            status=403, reason="Forbidden", message="endpointslices is forbidden"
        )
    in_pod = await make(pod=await pods.create("worker-0", ready=True))
    outside = await make()
    await in_pod.put("v1/instances/a", {"n": 1})
    await outside.put("v1/instances/b", {"n": 2})
    await in_pod.flush()
    watch = outside.watch_prefix("v1/")
    assert await next_event(watch) == WatchEvent("put", "v1/instances/b", {"n": 2})
    assert "get, list, watch on discovery.k8s.io endpointslices" in caplog.text
    with pytest.raises(ConfigError, match=r"endpointslices is forbidden.*needs get, list, watch"):
        await outside.get_prefix("v1/")
    await watch.aclose()


# ---------------------------------------------------------------------- pure helpers
def test_records_are_named_per_pod_and_container() -> None:
    assert pod_object_name(PodIdentity("worker-0", "u")) == "dyn-worker-0"
    assert pod_object_name(PodIdentity("worker-0", "u", "sidecar")) == "dyn-worker-0-sidecar"
    long = pod_object_name(PodIdentity("p" * 253))
    assert len(long) == 253 and long.startswith("dyn-ppp") and long != "dyn-" + "p" * 249
    assert PodIdentity.from_env({"POD_NAME": " w ", "POD_UID": "u", "DYN_CONTAINER_NAME": "c"}) == (
        PodIdentity("w", "u", "c")
    )
    assert PodIdentity.from_env({"POD_UID": "u"}) is None


def test_parse_record_of_a_pod() -> None:
    obj = discovery_object(
        "dyn-w", data={"k": '{"key":"a","value":{"n":1}}'}, holder="h/1",
        owner=PodIdentity("w", "u"), heartbeat=None,
    )  # fmt: skip
    assert parse_record(obj, 9.0) == DiscoveryRecord(
        "dyn-w", None, 9.0, {"a": {"n": 1}}, PodIdentity("w", "u")
    )
    del obj["metadata"]["annotations"][POD_ANNOTATION]
    assert parse_record(obj, 9.0) is None  # neither a pod nor a heartbeat


def _slice(*endpoints: dict[str, Any], label: str = "true") -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "labels": {DISCOVERY_SERVICE_LABEL: label}},
        "endpoints": list(endpoints),
    }


def _endpoint(name: str, uid: str, **conditions: bool) -> dict[str, Any]:
    target = {"kind": "Pod", "name": name, "uid": uid}
    return {"addresses": ["10.0.0.1"], "conditions": conditions, "targetRef": target}


def test_ready_pods_of_discovery_slices() -> None:
    ready = ready_pods(
        _slice(
            _endpoint("a", "1", ready=True),
            _endpoint("b", "2", ready=False, terminating=True),
            _endpoint("c", "3"),  # no condition: ready, as the API documents
            {"addresses": ["10.0.0.9"]},  # no pod behind it
        )
    )
    assert ready == {("a", "1"), ("c", "3")}
    assert ready_pods(_slice(_endpoint("a", "1"), label="false")) == frozenset()
    index = ready_index([ready, frozenset({("a", "9")})])
    assert index == {"a": frozenset({"1", "9"}), "c": frozenset({"3"})}
    assert pod_is_ready(PodIdentity("a", "1"), index)
    assert pod_is_ready(PodIdentity("a"), index)  # uid unknown: the name decides
    assert not pod_is_ready(PodIdentity("c", "4"), index)  # a new pod of the same name
    assert not pod_is_ready(PodIdentity("b", "2"), index)
