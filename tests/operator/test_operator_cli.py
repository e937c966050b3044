"""`python -m dynamo.operator` as a process, configured like any client (KUBECONFIG), with its
/healthz endpoint; it stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml
from _operator_harness import GUIDE_DGD, Cluster, load_yaml, wait_for

from dynamo.testing.kube_api import FakeKubeApi
from dynamo.testing.servers import free_port


def _kubeconfig(kube: FakeKubeApi, path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": str(kube.url).rstrip("/")}}],
        "users": [{"name": "tester", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_operator_process_uses_kubeconfig_and_serves_healthz(
    kube: FakeKubeApi, cluster: Cluster, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(_kubeconfig(kube, tmp_path / "kubeconfig")),
        "DYN_OPERATOR_HEALTH_PORT": str(port),
        "DYN_OPERATOR_NAMESPACE": "dynamo-system",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dynamo.operator",
        "--log-level",
        "warning",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"operator exited with {proc.returncode}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, "the operator's /healthz")
        await cluster.apply(load_yaml(GUIDE_DGD), "dynamo-system")
        status = await cluster.wait_state("my-llm", "dynamo-system", "pending")
        assert set(status["services"]) == {"Frontend", "VllmDecodeWorker"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0, out


def test_help_lists_the_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dynamo.operator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--namespace", "--default-image", "--discovery-backend", "--etcd-address"):
        assert flag in out
