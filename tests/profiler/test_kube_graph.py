"""Thorough profiling on Kubernetes: `KubeGraph` against the in-memory API server (real HTTP).

The test plays the operator and the kubelet: when the trial DGD appears it runs a real
`dynamo serve` of that same DGD on this machine and marks the DGD `successful`; the profiler
measures through that frontend (the URL resolution is injected; the in-cluster Service URL is
the default) and deletes the DGD. A DGD that never gets ready fails with its name and last
status, and is deleted; so is one whose profiler gets SIGTERM (a deleted profiling Job)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import yaml

from dynamo.deploy.graph import load_graph
from dynamo.profiler.config import ProfileRequest, parse_request
from dynamo.profiler.hardware import engine
from dynamo.profiler.kube_graph import (
    DGD,
    DGD_API_VERSION,
    DGD_KIND,
    KubeGraph,
    frontend_url,
    trial_name,
)
from dynamo.profiler.measure import DecodePoint, PrefillPoint
from dynamo.profiler.thorough import ThoroughMeasurer, resolve_target
from dynamo.runtime.errors import DynamoError
from dynamo.runtime.kube import KubeClient, KubeConnection
from dynamo.testing.kube_api import FakeKubeApi, fake_kube_api
from dynamo.testing.servers import free_port

NS = "team"
TRIAL = "sla-trial-tp1"
ENV = {"DGDR_NAME": "sla", "DGDR_NAMESPACE": NS, "DGDR_UID": "u-1"}
RUN_LIMIT_S = 300.0  # a hang guard: `dynamo serve` of a frontend and a mocker on 2 cores


def dgdr(timeout_s: float) -> dict[str, Any]:
    return {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeploymentRequest",
        "metadata": {"name": "sla", "namespace": NS},
        "spec": {
            "model": "Qwen/Qwen3-0.6B",
            "backend": "vllm",
            "useMocker": True,
            "profilingConfig": {
                "config": {
                    "sla": {"isl": 200, "osl": 10, "ttft": 300, "itl": 25},
                    "hardware": {"minNumGpusPerEngine": 1, "maxNumGpusPerEngine": 1},
                    "sweep": {"searchStrategy": "thorough"},
                    "deployment": {"deploymentTimeout": timeout_s},
                }
            },
        },
    }


def _connection(api: FakeKubeApi) -> KubeConnection:
    return KubeConnection(server=str(api.url).rstrip("/"), token="t", namespace=NS)


def _trial(api: FakeKubeApi) -> dict[str, Any] | None:
    for resource, ns, name, body in api.live_objects():
        if (resource.plural, ns, name) == ("dynamographdeployments", NS, TRIAL):
            return body
    return None


async def _appears(api: FakeKubeApi) -> dict[str, Any]:
    while True:
        found = _trial(api)
        if found is not None:
            return found
        await asyncio.sleep(0.2)


async def _set_status(api: FakeKubeApi, status: Mapping[str, Any]) -> None:
    """What the operator does once the graph's workloads are (or are not) ready."""
    client = await KubeClient.connect(
        _connection(api), field_manager="dynamo-operator", custom_kinds=[DGD]
    )
    try:
        patch = {"status": status}
        await client.patch(DGD_API_VERSION, DGD_KIND, TRIAL, NS, patch, subresource="status")
    finally:
        await client.close()


def _serve(graph: Mapping[str, Any], port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    """The kubelet's part: run the stored DGD itself with `dynamo serve`."""
    path = tmp_path / f"{TRIAL}.yaml"
    path.write_text(yaml.safe_dump(dict(graph)))
    with (tmp_path / "serve.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "dynamo.cli", "serve", "-f", str(path)),
                *("--http-port", str(port), "--color", "never"),
                *("--run-dir", str(tmp_path / "run")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(20)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_names_and_the_in_cluster_url() -> None:
    assert trial_name("sla", 4) == "sla-trial-tp4"
    long = trial_name("a" * 80, 16)
    assert len(long) == 46 and long.endswith("-trial-tp16")
    assert frontend_url(TRIAL, NS) == "http://sla-trial-tp1-frontend.team.svc.cluster.local:8000"
    assert resolve_target("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "kubernetes"
    assert resolve_target("auto", {}) == "local"
    assert resolve_target("kubernetes", {}) == "kubernetes"


def test_a_real_engine_trial_is_one_aggregated_worker_with_the_candidates_tp() -> None:
    doc = dgdr(60)
    doc["spec"]["useMocker"] = False
    request = parse_request(doc)
    from dynamo.profiler.dgd import trial_graph

    graph = trial_graph(request, engine("h100_sxm", 4), "sla-trial-tp4")
    load_graph(graph)
    services = graph["spec"]["services"]
    assert sorted(services) == ["Frontend", "Worker"]
    worker = services["Worker"]
    assert worker["resources"] == {"limits": {"gpu": "4"}}
    assert "subComponentType" not in worker
    args = worker["extraPodSpec"]["mainContainer"]["args"]
    assert args == ["--model", "Qwen/Qwen3-0.6B", "--tensor-parallel-size", "4"]


def _measure(request: ProfileRequest, api: FakeKubeApi, port: int) -> tuple[Any, Any]:
    def url_for(name: str, namespace: str) -> str:
        assert (name, namespace) == (TRIAL, NS)
        return f"http://127.0.0.1:{port}"

    def deploy(eng: Any) -> KubeGraph:
        return KubeGraph(request, eng, connection=_connection(api), url_for=url_for, env=ENV)

    measurer = ThoroughMeasurer(request, "kubernetes", deploy=deploy)
    eng = engine("h100_sxm", 1)
    try:
        return measurer.prefill(eng, 200), measurer.decode(eng, 200, 10, 2)
    finally:
        measurer.close()


async def test_a_trial_dgd_is_deployed_measured_and_deleted(tmp_path: Path) -> None:
    request = parse_request(dgdr(RUN_LIMIT_S))
    assert request.mode == "thorough"
    port = free_port()
    serve: subprocess.Popen[bytes] | None = None
    async with fake_kube_api() as api:
        measuring = asyncio.ensure_future(asyncio.to_thread(_measure, request, api, port))
        try:
            graph = await asyncio.wait_for(_appears(api), RUN_LIMIT_S)
            labels = graph["metadata"]["labels"]
            assert labels["dgdr.nvidia.com/name"] == "sla"
            assert labels["dgdr.nvidia.com/namespace"] == NS
            assert labels["nvidia.com/dynamo-profiler-trial"] == "tp1"
            (owner,) = graph["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"]) == (
                "DynamoGraphDeploymentRequest",
                "sla",
                "u-1",
            )
            load_graph(graph)  # valid against our CRD model
            services = graph["spec"]["services"]
            assert sorted(services) == ["Frontend", "Worker"]
            serve = _serve(graph, port, tmp_path)
            await _set_status(api, {"state": "successful"})
            prefill, decode = await asyncio.wait_for(measuring, RUN_LIMIT_S)
        finally:
            if serve is not None:
                await asyncio.to_thread(_kill, serve)
            if not measuring.done():
                await asyncio.wait_for(asyncio.shield(measuring), RUN_LIMIT_S)
        assert isinstance(prefill, PrefillPoint) and prefill.ttft_ms > 0
        assert isinstance(decode, DecodePoint) and decode.itl_ms > 0 and decode.thpt_per_gpu > 0
        assert _trial(api) is None  # deleted when the measurer closed


async def test_a_trial_that_never_gets_ready_fails_with_its_status_and_is_deleted() -> None:
    request = parse_request(dgdr(3))
    async with fake_kube_api() as api:

        def deploy() -> None:
            KubeGraph(request, engine("h100_sxm", 1), connection=_connection(api), env=ENV)

        trying = asyncio.ensure_future(asyncio.to_thread(deploy))
        await asyncio.wait_for(_appears(api), RUN_LIMIT_S)
        pending = {
            "state": "pending",
            "conditions": [
                {"type": "Ready", "status": "False", "message": "sla-trial-tp1-worker: 0/1 ready"}
            ],
        }
        await _set_status(api, pending)
        with pytest.raises(DynamoError) as caught:
            await asyncio.wait_for(trying, RUN_LIMIT_S)
        assert str(caught.value) == (
            "DynamoGraphDeployment team/sla-trial-tp1 was not ready after 3 s "
            "(deployment.deploymentTimeout); last status: state pending, Ready: "
            "sla-trial-tp1-worker: 0/1 ready"
        )
        assert _trial(api) is None


async def test_an_interrupt_while_the_create_is_in_flight_still_deletes_the_trial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM (the profiler raises KeyboardInterrupt; here a BaseException the test's loop
    survives) after the API server made the trial but before its reply was read: the
    clean-up deletes it all the same (a CI failure of the SIGTERM test below: the profiler
    exited and left its trial behind)."""

    class Interrupted(BaseException):
        pass

    request = parse_request(dgdr(RUN_LIMIT_S))
    create = KubeClient.create

    async def create_then_interrupt(self: KubeClient, *args: Any, **kwargs: Any) -> Any:
        await create(self, *args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(KubeClient, "create", create_then_interrupt)
    async with fake_kube_api() as api:

        def deploy() -> None:
            KubeGraph(request, engine("h100_sxm", 1), connection=_connection(api), env=ENV)

        with pytest.raises(Interrupted):
            await asyncio.wait_for(asyncio.to_thread(deploy), RUN_LIMIT_S)
        assert _trial(api) is None


@pytest.mark.parametrize(
    "command",
    [
        ["dynamo.profiler", "--deploy-target", "kubernetes"],
        ["dynamo.profiler.job", "--output-configmap", "dgdr-output-sla"],  # the pod's PID 1
    ],
)
async def test_sigterm_deletes_the_trial_dgd(tmp_path: Path, command: list[str]) -> None:
    """A deleted profiling Job: the profiler gets SIGTERM while it waits for its trial."""
    async with fake_kube_api() as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(_connection(api).as_kubeconfig()))
        config = tmp_path / "dgdr.yaml"
        config.write_text(yaml.safe_dump(dgdr(RUN_LIMIT_S)))
        env = {
            "PATH": os.environ["PATH"],
            "KUBECONFIG": str(kubeconfig),
            "KUBERNETES_SERVICE_HOST": "kubernetes.default.svc",  # in a pod: auto is kubernetes
            **ENV,
        }
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", command[0], "--config", str(config)),
            *("--output-dir", str(tmp_path / "out"), *command[1:]),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await asyncio.wait_for(_appears(api), RUN_LIMIT_S)
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), RUN_LIMIT_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log = out.decode()
        assert proc.returncode == 130, log
        assert f"deleted DynamoGraphDeployment {NS}/{TRIAL}" in log
        assert _trial(api) is None


def test_a_base_dgd_trial_keeps_its_frontend_and_decode_worker_aggregated() -> None:
    from dynamo.profiler.dgd import trial_graph

    doc = dgdr(60)
    doc["spec"]["useMocker"] = False
    doc["spec"]["backend"] = "sglang"
    worker = {"image": "img", "command": ["python3", "-m", "dynamo.sglang"]}
    base = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "base"},
        "spec": {
            "services": {
                "Fe": {"componentType": "frontend", "replicas": 2},
                "Prefill": {
                    "componentType": "worker",
                    "subComponentType": "prefill",
                    "extraPodSpec": {"mainContainer": {**worker, "args": ["--tp", "1"]}},
                },
                "Decode": {
                    "componentType": "worker",
                    "subComponentType": "decode",
                    "replicas": 3,
                    "extraPodSpec": {
                        "mainContainer": {
                            **worker,
                            "args": ["--model-path", "m", "--disaggregation-mode", "decode"],
                        }
                    },
                },
            }
        },
    }
    doc["spec"]["profilingConfig"]["config"]["engine"] = {"config": base}
    graph = trial_graph(parse_request(doc), engine("h100_sxm", 2), "sla-trial-tp2")
    load_graph(graph)
    services = graph["spec"]["services"]
    assert sorted(services) == ["Fe", "Worker"]
    assert services["Fe"]["replicas"] == 1
    trial = services["Worker"]
    assert (trial["replicas"], trial["resources"]) == (1, {"limits": {"gpu": "2"}})
    assert "subComponentType" not in trial
    assert trial["extraPodSpec"]["mainContainer"]["args"] == ["--model-path", "m", "--tp", "2"]
