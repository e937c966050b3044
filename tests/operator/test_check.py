"""`python -m dynamo.operator.check` against the fake API server and real etcd / NATS."""

from __future__ import annotations

import asyncio

import pytest
from _operator_harness import Cluster

from dynamo.operator.check import CheckConfig, check_etcd, check_nats, format_table, main
from dynamo.operator.crdgen import CRDS, build_crd
from dynamo.runtime.kube import KubeConnection
from dynamo.testing.kube_api import FakeKubeApi
from dynamo.testing.servers import EtcdServer, NatsServer, free_port


def _connection(kube: FakeKubeApi) -> KubeConnection:
    return KubeConnection(server=str(kube.url).rstrip("/"), token="t", insecure=True)


async def _ready_cluster(cluster: Cluster) -> None:
    for info in CRDS:
        status, body = await cluster._call(
            "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", build_crd(info)
        )
        assert status < 300, body
    nodes = [("gpu-0", {"cpu": "64", "nvidia.com/gpu": "8"}), ("cpu-0", {"cpu": "16"})]
    for name, allocatable in nodes:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "status": {"allocatable": allocatable},
        }
        assert (await cluster._call("POST", "/api/v1/nodes", node))[0] < 300
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "rancher.io/local-path",
    }
    assert (await cluster._call("POST", "/apis/storage.k8s.io/v1/storageclasses", sc))[0] < 300


async def test_a_ready_cluster_passes(
    kube: FakeKubeApi,
    cluster: Cluster,
    etcd_server: EtcdServer,
    nats_server: NatsServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _ready_cluster(cluster)
    argv = ["--etcd-address", etcd_server.url, "--nats-address", nats_server.url]
    rc = await asyncio.to_thread(main, argv, connection=_connection(kube))
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "PASS" in rows["CRDs"] and "dgd, dgdr, dcd" in rows["CRDs"]
    assert "1 of 2 nodes, 8 GPUs allocatable" in rows["GPU"]
    assert "PASS    standard" in rows["Default"]
    assert "healthy" in rows["etcd"]
    assert "PASS" in rows["NATS"]
    assert "How to fix" not in out


async def test_an_empty_cluster_fails_with_fixes(
    kube: FakeKubeApi, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = await asyncio.to_thread(main, [], connection=_connection(kube))
    out = capsys.readouterr().out
    assert rc == 1
    assert "CRDs installed        FAIL    missing: dynamographdeployments.nvidia.com" in out
    assert "GPU nodes             FAIL    0 of 0 nodes have allocatable nvidia.com/gpu" in out
    assert "Default StorageClass  FAIL    no default (classes: none)" in out
    assert "etcd                  SKIP" in out
    assert "CRDs installed: helm install dynamo-crds deploy/helm/dynamo-crds" in out
    assert "Default StorageClass: kubectl patch storageclass <name>" in out


async def test_unreachable_api_server_fails_and_skips_cluster_checks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = KubeConnection(server=f"http://127.0.0.1:{free_port()}", token="t")
    rc = await asyncio.to_thread(main, ["--timeout-s", "2"], connection=dead)
    out = capsys.readouterr().out
    assert rc == 1
    assert "Kubernetes API  FAIL" in out
    assert "CRDs" not in out


async def test_unreachable_or_wrong_etcd_and_nats_fail(nats_server: NatsServer) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = await check_etcd(closed, 2.0)
    assert (result.outcome, result.name) == ("FAIL", "etcd")
    assert "unreachable" in result.detail
    assert "global.etcd.install=true" in result.fix
    # A NATS server is not an etcd.
    wrong = await check_etcd(nats_server.url.replace("nats://", "http://"), 2.0)
    assert wrong.outcome == "FAIL"
    assert (await check_nats(closed.replace("http", "nats"), 2.0)).outcome == "FAIL"


def test_table_lists_fixes_for_failures_only() -> None:
    from dynamo.operator.check import CheckResult

    text = format_table(
        [CheckResult("a", "PASS", "ok", "never shown"), CheckResult("bb", "FAIL", "bad", "do X")]
    )
    assert text.splitlines() == [
        "CHECK  RESULT  DETAIL",
        "a      PASS    ok",
        "bb     FAIL    bad",
        "",
        "How to fix:",
        "  bb: do X",
    ]
    assert CheckConfig().etcd_address == ""
