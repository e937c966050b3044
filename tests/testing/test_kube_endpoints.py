"""The EndpointSlice controller test double: slices follow Services and pod readiness like the
real controller's (at most 100 endpoints a slice, no pod without an IP, owned by the Service)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from dynamo.testing.kube_api import KubeHttp, fake_kube_api, object_path
from dynamo.testing.kube_endpoints import (
    FakePods,
    endpoint,
    endpoint_slice_controller,
)

NS = "ns"


async def _slices(http: KubeHttp) -> dict[str, list[dict[str, Any]]]:
    status, listing = await http.request(
        "GET", object_path("discovery.k8s.io/v1", "endpointslices", NS)
    )
    assert status == 200
    return {s["metadata"]["name"]: s["endpoints"] for s in listing["items"]}


async def _until(http: KubeHttp, want: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """The slices once each has the wanted number of ready endpoints."""
    async with asyncio.timeout(30):
        while True:
            slices = await _slices(http)
            ready = {n: sum(e["conditions"]["ready"] for e in eps) for n, eps in slices.items()}
            if ready == want:
                return slices
            await asyncio.sleep(0.05)


async def test_slices_follow_pods_and_services() -> None:
    async with (
        fake_kube_api(with_dynamo_crds=False) as api,
        endpoint_slice_controller(api),
        aiohttp.ClientSession(base_url=str(api.url)) as session,
    ):
        http = KubeHttp(session)
        pods = FakePods(http, NS)
        await pods.service()
        for i in range(150):
            await pods.create(f"p{i:03d}", ready=i % 2 == 0)
        slices = await _until(http, {"g-dynamo-discovery-0": 50, "g-dynamo-discovery-1": 25})
        assert [len(eps) for eps in slices.values()] == [100, 50]
        first = slices["g-dynamo-discovery-0"][0]
        assert first["targetRef"]["name"] == "p000"
        assert first["conditions"] == {"ready": True, "serving": True, "terminating": False}
        await pods.set_ready("p001", True)
        await pods.delete("p000")
        await _until(http, {"g-dynamo-discovery-0": 50, "g-dynamo-discovery-1": 25})
        await http.request("DELETE", object_path("v1", "services", NS, "g-dynamo-discovery"))
        assert await _slices(http) == {}  # garbage-collected with their Service


def test_endpoint_of_a_pod() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": NS, "uid": "u"},
        "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "False"}]},
    }
    assert endpoint(pod, publish_not_ready=False) == {
        "addresses": ["10.0.0.1"],
        "conditions": {"ready": False, "serving": False, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": NS, "name": "p", "uid": "u"},
    }
    assert endpoint(pod, publish_not_ready=True)["conditions"]["ready"] is True  # type: ignore[index]
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert endpoint(pod, publish_not_ready=False)["conditions"] == {  # type: ignore[index]
        "ready": False,
        "serving": True,
        "terminating": True,
    }
    del pod["status"]["podIP"]
    assert endpoint(pod, publish_not_ready=False) is None
