"""Thorough profiling's trial DGD through the real operator (fake API server): the profiler's
`KubeGraph` creates `<dgdr>-trial-tp1`, the operator reconciles it into Deployments, the test
plays the Deployment controller (marks them available) and the kubelet (runs the stored DGD
with `dynamo serve`), the operator reports the graph `successful`, the profiler measures
through its frontend and deletes the DGD, and its workloads go with it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import yaml
from _operator_harness import Cluster, wait_for

from dynamo.profiler.config import parse_request
from dynamo.profiler.hardware import Engine, engine
from dynamo.profiler.kube_graph import KubeGraph
from dynamo.profiler.measure import PrefillPoint
from dynamo.profiler.thorough import ThoroughMeasurer
from dynamo.runtime.kube import KubeConnection
from dynamo.testing.kube_api import FakeKubeApi
from dynamo.testing.servers import free_port

NS = "dynamo-system"
TRIAL = "sla-trial-tp1"
ENV = {"DGDR_NAME": "sla", "DGDR_NAMESPACE": NS, "DGDR_UID": "u-1"}
RUN_LIMIT_S = 300.0
REQUEST = parse_request(
    {
        "metadata": {"name": "sla", "namespace": NS},
        "spec": {
            "model": "Qwen/Qwen3-0.6B",
            "backend": "vllm",
            "useMocker": True,
            "profilingConfig": {
                "config": {
                    "sla": {"isl": 200, "osl": 10},
                    "sweep": {"searchStrategy": "thorough"},
                    "deployment": {"deploymentTimeout": RUN_LIMIT_S},
                }
            },
        },
    }
)


def _measure(api: FakeKubeApi, port: int) -> PrefillPoint:
    connection = KubeConnection(server=str(api.url).rstrip("/"), token="t", namespace=NS)

    def deploy(eng: Engine) -> KubeGraph:
        return KubeGraph(
            REQUEST,
            eng,
            connection=connection,
            url_for=lambda name, ns: f"http://127.0.0.1:{port}",
            env=ENV,
        )

    measurer = ThoroughMeasurer(REQUEST, "kubernetes", deploy=deploy)
    try:
        return measurer.prefill(engine("h100_sxm", 1), 200)
    finally:
        measurer.close()


def _serve(graph: dict[str, Any], port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    path = tmp_path / f"{TRIAL}.yaml"
    path.write_text(yaml.safe_dump(graph))
    with (tmp_path / "serve.log").open("wb") as log:
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


async def test_the_operator_readies_the_trial_and_it_is_deleted_after(
    kube: FakeKubeApi, cluster: Cluster, operator: None, tmp_path: Path
) -> None:
    port = free_port()
    measuring = asyncio.ensure_future(asyncio.to_thread(_measure, kube, port))
    serve: subprocess.Popen[bytes] | None = None
    try:

        async def trial() -> dict[str, Any] | None:
            return await cluster.get("DynamoGraphDeployment", TRIAL, NS)

        graph = await wait_for(trial, "the trial DGD", limit_s=RUN_LIMIT_S)
        serve = _serve(graph, port, tmp_path)
        for deployment in (f"{TRIAL}-frontend", f"{TRIAL}-worker"):

            async def made(d: str = deployment) -> dict[str, Any] | None:
                return await cluster.get("Deployment", d, NS)

            await wait_for(made, f"Deployment {deployment}")
            await cluster.mark_available(deployment, NS)
        service = await cluster.get("Service", f"{TRIAL}-frontend", NS)
        assert service is not None  # what frontend_url points at in a cluster
        assert [p["port"] for p in service["spec"]["ports"]] == [8000]
        point = await asyncio.wait_for(measuring, RUN_LIMIT_S)
    finally:
        if serve is not None:
            await asyncio.to_thread(_kill, serve)
        if not measuring.done():
            with suppress(Exception):
                await asyncio.wait_for(measuring, RUN_LIMIT_S)
    assert point.ttft_ms > 0
    assert await cluster.get("DynamoGraphDeployment", TRIAL, NS) is None

    async def collected() -> bool:
        return await cluster.get("Deployment", f"{TRIAL}-worker", NS) is None

    await wait_for(collected, "the trial's workloads to be garbage-collected")
