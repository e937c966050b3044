"""A real frontend and real worker processes over Kubernetes discovery (the fake API server with
the test EndpointSlice controller): a worker whose pod turns NotReady or is deleted leaves the
frontend's routing; Ready again, it comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml

from dynamo.runtime.discovery.kubernetes import PodIdentity
from dynamo.testing.kube_api import KubeHttp, fake_kube_api
from dynamo.testing.kube_endpoints import FakePods, endpoint_slice_controller
from dynamo.testing.processes import ECHO_WORKER_READY, Procs, read_until

pytestmark = pytest.mark.slow
NS = "team-a"


def _kubeconfig(url: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url.rstrip("/")}}],
        "users": [{"name": "tester", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
        "current-context": "fake",
    }


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[FakePods, Procs]]:
    async with (
        fake_kube_api(with_dynamo_crds=False) as api,
        endpoint_slice_controller(api),
        aiohttp.ClientSession(base_url=str(api.url)) as session,
    ):
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(_kubeconfig(str(api.url))))
        env = {"DYN_DISCOVERY_BACKEND": "kubernetes", "KUBECONFIG": str(path), "POD_NAMESPACE": NS}
        for name in ("POD_NAME", "POD_UID"):
            env[name] = ""  # the test process's own, if any, must not leak into the children
        pods, procs = FakePods(KubeHttp(session), NS), Procs(env)
        await pods.service()
        try:
            yield pods, procs
        finally:
            await procs.stop_all()


async def _worker(procs: Procs, pod: PodIdentity) -> int:
    """An echo worker process in `pod`; its instance id."""
    proc = await procs.spawn(
        "dynamo.testing.echo_worker", "--delay-s", "0",
        env={"POD_NAME": pod.name, "POD_UID": pod.uid, "DYN_KUBE_DISCOVERY_LIVENESS": "readiness"},
    )  # fmt: skip
    instance_id = int(await read_until(proc, ECHO_WORKER_READY), 16)
    procs.drain(proc)
    return instance_id


async def _routed(procs: Procs, url: str, n: int) -> set[int]:
    """The instance ids the frontend routes to, once it has `n`."""
    return {int(i["instance_id"]) for i in await procs.wait_for_instances(url, n)}  # type: ignore[index]


async def test_a_worker_leaves_routing_when_its_pod_is_not_ready(
    cluster: tuple[FakePods, Procs],
) -> None:
    pods, procs = cluster
    url = await procs.frontend()  # outside any pod: its own record has a heartbeat
    a = await _worker(procs, await pods.create("worker-a", ready=True))
    b = await _worker(procs, await pods.create("worker-b", ready=True))
    assert await _routed(procs, url, 2) == {a, b}
    await pods.set_ready("worker-a", False)  # its readiness probe fails
    assert await _routed(procs, url, 1) == {b}
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    try:
        for _ in range(4):  # every request lands on the one worker left
            done = await client.completions.create(model="tiny", prompt="hello", max_tokens=3)
            assert done.usage is not None and done.usage.completion_tokens == 3
    finally:
        await client.close()
    await pods.set_ready("worker-a", True)
    assert await _routed(procs, url, 2) == {a, b}
    await pods.delete("worker-b")  # its process lives on, but its pod is gone
    assert await _routed(procs, url, 1) == {a}
