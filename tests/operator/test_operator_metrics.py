"""The operator's /metrics: reconciles counted by result, against the in-memory Kubernetes API."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from _operator_harness import GUIDE_DGD, Cluster, load_yaml, running_operator, wait_for
from prometheus_client.parser import text_string_to_metric_families

from dynamo.operator.config import OperatorConfig
from dynamo.testing.kube_api import FakeKubeApi

NS = "dynamo-system"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _reconciles(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        text = await r.text()
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "dynamo_operator_reconciles_total"
        and sample.labels["kind"] == "DynamoGraphDeployment"
    }


async def test_reconciles_are_counted_by_result(kube: FakeKubeApi, cluster: Cluster) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    config = OperatorConfig(health_port=0, metrics_port=port)
    async with running_operator(kube, config):
        assert await _reconciles(url) == {"success": 0, "invalid": 0, "retry": 0}
        await cluster.apply(load_yaml(GUIDE_DGD), NS)
        bad: dict[str, Any] = load_yaml(GUIDE_DGD)
        bad["metadata"]["name"] = "bad"
        bad["spec"]["services"]["Frontend"]["replicas"] = -1
        await cluster.apply(bad, NS)

        async def both_counted() -> dict[str, float] | None:
            counts = await _reconciles(url)
            return counts if counts["success"] >= 1 and counts["invalid"] >= 1 else None

        counts = await wait_for(both_counted, "a success and an invalid reconcile")
        assert counts["retry"] == 0
