"""The shared Kubernetes client layer against the fake API server over HTTP: plain dicts in
and out, label selectors, watches, and errors translated to `KubeApiError`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import kmock
import pytest

from dynamo.runtime.errors import ConfigError, TransportError
from dynamo.runtime.kube import (
    KubeApiError,
    KubeClient,
    KubeConnection,
    KubeWatchExpiredError,
)
from dynamo.testing.kube_api import FakeKubeApi, fake_kube_api
from dynamo.testing.servers import free_port

NS = "team-a"
CONFIGMAPS = kmock.resource("", "v1", "configmaps")


def configmap(name: str, labels: dict[str, str], **data: str) -> dict[str, object]:
    meta = {"name": name, "namespace": NS, "labels": labels}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


@pytest.fixture
async def kube() -> AsyncIterator[FakeKubeApi]:
    async with fake_kube_api(with_dynamo_crds=False) as api:
        yield api


@pytest.fixture
async def client(kube: FakeKubeApi) -> AsyncIterator[KubeClient]:
    server = str(kube.url).rstrip("/")
    connection = KubeConnection(server=server, token="t", namespace=NS)
    client = await KubeClient.connect(connection, field_manager="tester")
    yield client
    await client.close()


async def test_create_get_patch_delete_round_trip(client: KubeClient) -> None:
    created = await client.create(configmap("a", {"app": "web"}, k="1"))
    assert created["metadata"]["name"] == "a"
    assert created["data"] == {"k": "1"}
    patched = await client.patch("v1", "ConfigMap", "a", NS, {"data": {"k": None, "j": "2"}})
    assert patched["data"] == {"j": "2"}
    got = await client.get("v1", "ConfigMap", "a")  # the connection's default namespace
    assert got is not None
    assert got["data"] == {"j": "2"}
    assert await client.delete("v1", "ConfigMap", "a", NS) is True
    assert await client.delete("v1", "ConfigMap", "a", NS) is False
    assert await client.get("v1", "ConfigMap", "a", NS) is None


async def test_list_honours_label_selectors(client: KubeClient) -> None:
    await client.create(configmap("web", {"app": "web", "tier": "front"}))
    await client.create(configmap("db", {"app": "db"}))
    await client.create(configmap("other", {"team": "b"}))

    async def names(labels: dict[str, str | list[str] | None]) -> list[str]:
        found = await client.list("v1", "ConfigMap", NS, labels)
        return sorted(o["metadata"]["name"] for o in found.items)

    assert await names({}) == ["db", "other", "web"]
    assert await names({"app": "web"}) == ["web"]
    assert await names({"app": None}) == ["db", "web"]
    assert await names({"app": ["db", "web"], "tier": None}) == ["web"]
    assert (await client.list("v1", "ConfigMap", "elsewhere")).items == []


async def test_watch_sees_only_selected_objects(client: KubeClient) -> None:
    events = client.watch("v1", "ConfigMap", NS, {"app": "web"})
    first = asyncio.ensure_future(anext(events))
    await client.create(configmap("db", {"app": "db"}))
    await client.create(configmap("web", {"app": "web"}))
    kind, obj = await asyncio.wait_for(first, 30)
    assert (kind, obj["metadata"]["name"]) == ("ADDED", "web")
    await events.aclose()


async def test_a_watch_from_an_expired_version_raises_its_own_error(
    kube: FakeKubeApi, client: KubeClient
) -> None:
    kube[kmock.action.WATCH, CONFIGMAPS] << kmock.KubernetesError(
        status=410, reason="Expired", message="too old resource version"
    )
    events = client.watch("v1", "ConfigMap", NS, resource_version="1")
    with pytest.raises(KubeWatchExpiredError) as caught:
        await anext(events)
    assert caught.value.status == 410
    assert caught.value.transient is False
    assert str(caught.value).startswith("watch ConfigMap: 410: ")


async def test_refusals_and_outages_are_one_error_class(client: KubeClient) -> None:
    await client.create(configmap("a", {}))
    with pytest.raises(KubeApiError) as refused:
        await client.create(configmap("a", {}))
    assert refused.value.status == 409
    assert refused.value.transient is False
    assert isinstance(refused.value, TransportError)

    dead = KubeConnection(server=f"http://127.0.0.1:{free_port()}", token="t", namespace=NS)
    unreachable = await KubeClient.connect(dead, field_manager="tester", timeout_s=2.0)
    try:
        with pytest.raises(KubeApiError) as down:
            await unreachable.get("v1", "ConfigMap", "a")
    finally:
        await unreachable.close()
    assert down.value.status == 0
    assert down.value.transient is True


async def test_an_unknown_kind_is_a_config_error(client: KubeClient) -> None:
    with pytest.raises(ConfigError, match=r"unknown Kubernetes kind example\.com/v1/Widget"):
        await client.get("example.com/v1", "Widget", "w", NS)
