"""`dynamo.profiler.publish`: the profiling Job's outputs as ConfigMap `dgdr-output-<dgdr>`,
written through the Kubernetes API (a fake API server over real HTTP here)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from dynamo.profiler.publish import (
    MAX_DATA_BYTES,
    PUBLISHED,
    PublishError,
    collect,
    output_configmap,
)
from dynamo.runtime.kube import KubeConnection
from dynamo.testing.kube_api import FakeKubeApi, fake_kube_api

RUN_LIMIT_S = 120.0  # a hang guard


def write_outputs(out: Path, results: dict[str, object]) -> None:
    for name in PUBLISHED:
        (out / name).write_text("kind: DynamoGraphDeployment\n")
    (out / "profiling_results.json").write_text(json.dumps(results))
    (out / "prefill_performance.png").write_bytes(b"\x89PNG" + bytes(4096))


def test_collect_names_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "profiling_results.json").write_text("{}")
    with pytest.raises(PublishError) as caught:
        collect(tmp_path)
    assert str(caught.value) == f"the profiler wrote no {tmp_path / 'config_with_planner.yaml'}"


def test_collect_refuses_more_than_a_configmap_holds(tmp_path: Path) -> None:
    write_outputs(tmp_path, {})
    (tmp_path / "config_with_planner.yaml").write_text("x" * MAX_DATA_BYTES)
    with pytest.raises(PublishError) as caught:
        collect(tmp_path)
    assert "over the 921600-byte ConfigMap budget" in str(caught.value)
    assert f"config_with_planner.yaml {MAX_DATA_BYTES} B" in str(caught.value)


def test_collect_leaves_the_plots_out(tmp_path: Path) -> None:
    write_outputs(tmp_path, {"ok": True})
    assert sorted(collect(tmp_path)) == sorted(PUBLISHED)


def test_the_configmap_is_owned_by_the_request_named_in_the_env() -> None:
    env = {"DGDR_NAME": "sla", "DGDR_UID": "u-1"}
    cm = output_configmap("dgdr-output-sla", "team", {"a": "b"}, env)
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "nvidia.com/v1alpha1",
            "kind": "DynamoGraphDeploymentRequest",
            "name": "sla",
            "uid": "u-1",
        }
    ]
    assert "ownerReferences" not in output_configmap("x", "team", {}, {})["metadata"]


async def _publish(api: FakeKubeApi, out: Path, tmp_path: Path) -> tuple[int, str]:
    kubeconfig = tmp_path / "kubeconfig"
    connection = KubeConnection(server=str(api.url).rstrip("/"), token="t", namespace="team")
    kubeconfig.write_text(yaml.safe_dump(connection.as_kubeconfig()))
    env = {
        "PATH": os.environ["PATH"],
        "KUBECONFIG": str(kubeconfig),
        "DGDR_NAME": "sla",
        "DGDR_NAMESPACE": "team",
        "DGDR_UID": "u-1",
    }
    argv = ["--output-dir", str(out), "--output-configmap", "dgdr-output-sla"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dynamo.profiler.publish",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out_bytes, _ = await asyncio.wait_for(proc.communicate(), RUN_LIMIT_S)
    assert proc.returncode is not None
    return proc.returncode, out_bytes.decode()


def _configmap(api: FakeKubeApi) -> dict[str, object] | None:
    for resource, ns, name, body in api.live_objects():
        if (resource.plural, ns, name) == ("configmaps", "team", "dgdr-output-sla"):
            return body
    return None


async def test_publish_writes_and_rewrites_the_configmap(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    async with fake_kube_api() as api:
        write_outputs(out, {"run": 1})
        code, log = await _publish(api, out, tmp_path)
        assert (code, log) == (0, "published ConfigMap team/dgdr-output-sla\n")
        cm = _configmap(api)
        assert cm is not None
        data = cm["data"]
        assert isinstance(data, dict)
        assert sorted(data) == sorted(PUBLISHED)
        assert json.loads(data["profiling_results.json"]) == {"run": 1}

        write_outputs(out, {"run": 2})  # a retried pod publishes again
        code, _ = await _publish(api, out, tmp_path)
        assert code == 0
        cm = _configmap(api)
        assert cm is not None
        data = cm["data"]
        assert isinstance(data, dict)
        assert json.loads(data["profiling_results.json"]) == {"run": 2}


async def test_publish_without_outputs_fails_in_one_line(tmp_path: Path) -> None:
    async with fake_kube_api() as api:
        code, log = await _publish(api, tmp_path, tmp_path)
    assert code == 1
    assert log == f"error: the profiler wrote no {tmp_path / 'profiling_results.json'}\n"
    assert _configmap(api) is None
