"""Kubernetes discovery against an in-memory API server over HTTP (kmock), for processes outside
any pod (heartbeat liveness): registration, watches, heartbeat expiry, broken watches, RBAC
errors, and a runtime end to end. Pod readiness is in test_discovery_kubernetes_pods.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from _kube_helpers import CONFIGMAPS, NS, configmap, kubeconfig_dict, next_event, wait_until
from _runtime_helpers import Spawn
from lightkube import KubeConfig

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.discovery.factory import make_discovery
from dynamo.runtime.discovery.kubernetes import KubernetesDiscovery
from dynamo.runtime.discovery.kubernetes.objects import (
    DISCOVERY_LABEL,
    RENEW_ANNOTATION,
    TTL_ANNOTATION,
    DiscoveryRecord,
    Freshness,
    data_key,
    parse_record,
)
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.kube_api import FakeKubeApi, KubeHttp, fake_kube_api, object_path

TTL_S = 10.0  # long: a stall of the shared test machine must not look like a dead process
SHORT_TTL_S = 1.0  # for the tests about heartbeats


@pytest.fixture(autouse=True)
def _no_pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAME", "POD_UID", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def kube() -> AsyncIterator[FakeKubeApi]:
    async with fake_kube_api(with_dynamo_crds=False) as api:
        yield api


@pytest.fixture
async def http(kube: FakeKubeApi) -> AsyncIterator[KubeHttp]:
    async with aiohttp.ClientSession(base_url=str(kube.url)) as session:
        yield KubeHttp(session)


Make = Callable[..., Awaitable[KubernetesDiscovery]]


@pytest.fixture
async def make(kube: FakeKubeApi) -> AsyncIterator[Make]:
    """Start a discovery against `kube` (or `url`); every one is closed at teardown."""
    made: list[KubernetesDiscovery] = []

    async def _make(url: str | None = None, **kw: Any) -> KubernetesDiscovery:
        config = KubeConfig.from_dict(kubeconfig_dict(url or str(kube.url)))
        discovery = KubernetesDiscovery(kubeconfig=config, ttl_s=kw.pop("ttl_s", TTL_S), **kw)
        made.append(discovery)
        await discovery.start()
        return discovery

    yield _make
    for discovery in made:
        await discovery.close()


async def test_two_processes_see_each_other_and_close_removes_keys(
    kube: FakeKubeApi, make: Make
) -> None:
    a, b = await make(), await make()
    assert a.liveness == "heartbeat"  # outside any pod
    await a.put("v1/instances/ns/c/e/1", {"n": 1})
    assert await b.get_prefix("v1/instances/") == {"v1/instances/ns/c/e/1": {"n": 1}}
    assert await b.get_prefix("v1/mdc/") == {}
    stored = configmap(kube, a.name)
    assert stored is not None
    assert stored["metadata"]["labels"] == {DISCOVERY_LABEL: "true"}
    assert stored["metadata"]["annotations"][TTL_ANNOTATION] == "10"
    assert stored["data"] == {
        "v1.instances.ns.c.e.1": '{"key":"v1/instances/ns/c/e/1","value":{"n":1}}'
    }
    watch = b.watch_prefix("v1/instances/ns/")
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/1", {"n": 1})
    await b.put("v1/instances/ns/c/e/2", {"n": 2})
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/2", {"n": 2})
    await a.put("v1/instances/ns/c/e/1", {"n": 3})
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/1", {"n": 3})
    await a.put("v1/instances/ns/c/e/3", {"n": 4})
    assert await next_event(watch) == WatchEvent("put", "v1/instances/ns/c/e/3", {"n": 4})
    await a.delete("v1/instances/ns/c/e/1")
    assert await next_event(watch) == WatchEvent("delete", "v1/instances/ns/c/e/1", None)
    assert list((configmap(kube, a.name) or {})["data"]) == ["v1.instances.ns.c.e.3"]
    await a.close()
    assert await next_event(watch) == WatchEvent("delete", "v1/instances/ns/c/e/3", None)
    assert configmap(kube, a.name) is None
    assert await b.get_prefix("v1/") == {"v1/instances/ns/c/e/2": {"n": 2}}
    await watch.aclose()


async def test_killed_process_expires_and_its_object_is_deleted(
    kube: FakeKubeApi, make: Make, spawn: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig_dict(str(kube.url), namespace="other")))
    env = {
        "DYN_DISCOVERY_BACKEND": "kubernetes",
        "KUBECONFIG": str(path),
        "POD_NAMESPACE": NS,  # wins over the kubeconfig's namespace
        "DYN_LEASE_TTL_S": str(SHORT_TTL_S),
    }
    child = await spawn("register", "v1/instances/ns/w/e/7", env=env)
    reader = await make()
    watch = reader.watch_prefix("v1/instances/")
    assert await next_event(watch) == WatchEvent(
        "put", "v1/instances/ns/w/e/7", {"pid": child.proc.pid}
    )
    child.proc.send_signal(signal.SIGKILL)
    await child.proc.wait()
    # no pod owns it, so only the stopped heartbeat tells
    assert await next_event(watch) == WatchEvent("delete", "v1/instances/ns/w/e/7", None)

    async def only_reader_left() -> bool:
        return [name for *_, name, _ in kube.live_objects()] == [reader.name]

    await wait_until(only_reader_left)
    await watch.aclose()


async def test_object_deleted_behind_the_owner_is_recreated(
    kube: FakeKubeApi, make: Make, http: KubeHttp
) -> None:
    owner, reader = await make(ttl_s=3 * SHORT_TTL_S), await make()
    await owner.put("v1/mdc/ns/c/e/1", {"model": "m"})
    watch = reader.watch_prefix("v1/mdc/")
    assert await next_event(watch) == WatchEvent("put", "v1/mdc/ns/c/e/1", {"model": "m"})
    status, _ = await http.request("DELETE", object_path("v1", "configmaps", NS, owner.name))
    assert status == 200
    assert await next_event(watch) == WatchEvent("delete", "v1/mdc/ns/c/e/1", None)
    # the next heartbeat finds the object gone and writes it again with every key
    assert await next_event(watch) == WatchEvent("put", "v1/mdc/ns/c/e/1", {"model": "m"})
    await watch.aclose()


async def test_watch_relists_after_410_gone(
    kube: FakeKubeApi, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dynamo.runtime.discovery.kubernetes")
    kube[kmock.action.WATCH, CONFIGMAPS][:1] << kmock.KubernetesError(
        status=410, reason="Expired", message="too old resource version"
    )
    owner, reader = await make(), await make()
    await owner.put("v1/instances/a", {"n": 1})
    watch = reader.watch_prefix("v1/")
    assert await next_event(watch) == WatchEvent("put", "v1/instances/a", {"n": 1})
    await owner.put("v1/instances/b", {"n": 2})
    assert await next_event(watch) == WatchEvent("put", "v1/instances/b", {"n": 2})
    assert "watch expired; listing again" in caplog.text
    await watch.aclose()


class Relay:
    """A TCP relay to the API server that can cut every connection (a network outage)."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._writers: set[asyncio.StreamWriter] = set()
        self._down = False
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self._down = True
        for writer in self._writers:
            writer.close()

    def restore(self) -> None:
        self._down = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


async def test_interrupted_watch_relists_and_catches_up(kube: FakeKubeApi, make: Make) -> None:
    async with Relay(kube.url.port or 80) as relay:
        owner = await make()
        reader = await make(relay.url)
        await owner.put("v1/instances/a", {"n": 1})
        watch = reader.watch_prefix("v1/")
        assert await next_event(watch) == WatchEvent("put", "v1/instances/a", {"n": 1})
        relay.cut()
        await owner.delete("v1/instances/a")  # missed by the reader's broken watch
        await owner.put("v1/instances/c", {"n": 3})
        relay.restore()
        caught_up = [await next_event(watch), await next_event(watch)]
        assert sorted(caught_up, key=lambda e: e.key) == [
            WatchEvent("delete", "v1/instances/a", None),
            WatchEvent("put", "v1/instances/c", {"n": 3}),
        ]
        await owner.put("v1/instances/d", {"n": 4})
        assert await next_event(watch) == WatchEvent("put", "v1/instances/d", {"n": 4})
        await watch.aclose()
        await reader.close()


async def test_forbidden_is_a_config_error_naming_the_rbac_rule(
    kube: FakeKubeApi, make: Make
) -> None:
    kube[kmock.action.CREATE, CONFIGMAPS] << kmock.KubernetesError(
        status=403, reason="Forbidden", message="configmaps is forbidden"
    )
    with pytest.raises(ConfigError, match=r"configmaps is forbidden.*needs get, list, watch"):
        await make()


async def test_factory_reads_the_pod_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ns-from-pod")
    monkeypatch.setenv("POD_NAME", "worker-1")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    config = RuntimeConfig(discovery_backend="kubernetes", lease_ttl_s=3.0)
    # A pod the operator did not make (no discovery Service selects it): heartbeat liveness.
    plain = make_discovery(config)
    assert isinstance(plain, KubernetesDiscovery)
    assert plain.liveness == "heartbeat"
    assert plain.name.startswith("dyn-") and plain.name != "dyn-worker-1"
    config = RuntimeConfig(
        discovery_backend="kubernetes", lease_ttl_s=3.0, kube_discovery_liveness="readiness"
    )
    discovery = make_discovery(config)
    assert isinstance(discovery, KubernetesDiscovery)
    assert discovery.namespace == "ns-from-pod"
    assert discovery.name == "dyn-worker-1"  # named after its pod: a restart overwrites it
    assert discovery.liveness == "readiness"
    with pytest.raises(ConfigError, match="no Kubernetes configuration"):
        await discovery.start()
    with pytest.raises(ConfigError, match="ttl must be > 0"):
        KubernetesDiscovery(ttl_s=0)
    monkeypatch.delenv("POD_NAME")
    with pytest.raises(ConfigError, match="readiness needs POD_NAME"):
        make_discovery(config)


async def echo(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    for token in request["tokens"]:
        yield {"token": token}


async def test_runtime_serves_and_calls_over_kubernetes_discovery(
    kube: FakeKubeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig_dict(str(kube.url))))
    monkeypatch.setenv("KUBECONFIG", str(path))
    config = RuntimeConfig(
        namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="kubernetes", lease_ttl_s=TTL_S
    )
    worker = await DistributedRuntime.create(config)
    caller = await DistributedRuntime.create(config)
    try:
        address = EndpointAddress(config.namespace, "backend", "generate")
        served = await worker.serve_endpoint(address, echo)
        client = caller.client(address)
        assert await client.wait_for_instances(20) == [served.instance_id]
        stream = client.generate({"tokens": [1, 2]}, instance_id=served.instance_id, request_id="r")
        items = [i async for i in stream]
        assert items == [{"token": 1}, {"token": 2}]
        await worker.shutdown(0)

        async def gone() -> bool:
            return client.instance_ids() == []

        await wait_until(gone)
        assert configmap(kube, worker.discovery.name) is None  # type: ignore[attr-defined]
    finally:
        await worker.shutdown(0)
        await caller.shutdown(0)
    assert [name for *_, name, _ in kube.live_objects()] == []


# ---------------------------------------------------------------------- pure helpers
def test_data_keys_are_valid_distinct_and_bounded() -> None:
    assert data_key("v1/instances/ns/c/e/1a") == "v1.instances.ns.c.e.1a"
    assert data_key("a.b") == "a_2eb" != data_key("a/b")
    assert data_key("a_b") == "a_5fb"
    assert data_key("ü") == "_c3_bc"
    long = data_key("x" * 300)
    assert long.startswith("_h") and len(long) == 66
    assert data_key("") == data_key("")


def _record(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "dyn-1",
            "labels": {DISCOVERY_LABEL: "true"},
            "annotations": annotations,
        },
        "data": {"k": '{"key":"a/b","value":{"n":1}}', "bad": "not json", "odd": '{"key":1}'},
    }


def test_parse_record_reads_heartbeat_ttl_and_entries() -> None:
    record = parse_record(
        _record(**{RENEW_ANNOTATION: "2026-01-01T00:00:00.500000Z", TTL_ANNOTATION: "4"}), 9.0
    )
    assert record == DiscoveryRecord("dyn-1", 1767225600.5, 4.0, {"a/b": {"n": 1}})
    defaulted = parse_record(_record(**{RENEW_ANNOTATION: "2026-01-01T00:00:00Z"}), 9.0)
    assert defaulted is not None and defaulted.ttl_s == 9.0
    assert parse_record(_record(), 9.0) is None  # no heartbeat: not ours
    assert parse_record({"metadata": {"name": "x"}}, 9.0) is None  # no label


def test_freshness_uses_observed_renewals_not_writer_clocks() -> None:
    fresh = Freshness()
    # first sight: the written renew time gives the age (an hour-old object is dead at once)
    fresh.observe(DiscoveryRecord("old", renew_s=5000.0 - 3600, ttl_s=10.0), 1000.0, 5000.0)
    assert not fresh.alive("old", 1000.0)
    # a writer whose clock runs 30 s behind looks dead at first sight...
    fresh.observe(DiscoveryRecord("skewed", renew_s=4970.0, ttl_s=10.0), 1000.0, 5000.0)
    assert not fresh.alive("skewed", 1000.0)
    # ...until its next heartbeat is seen, which counts from when it was seen
    fresh.observe(DiscoveryRecord("skewed", renew_s=4973.0, ttl_s=10.0), 1003.0, 5003.0)
    assert fresh.alive("skewed", 1012.9)
    assert not fresh.alive("skewed", 1013.0)
    # collectable only after two TTLs without a heartbeat and one TTL of watching
    assert fresh.collectable("old", 1009.0) is None
    assert fresh.collectable("old", 1010.0) == 5000.0 - 3600
    assert fresh.collectable("skewed", 1022.9) is None
    assert fresh.collectable("skewed", 1023.0) == 4973.0
    fresh.forget({"skewed"})
    assert fresh.collectable("old", 2000.0) is None
    assert not fresh.alive("unknown", 0.0)
