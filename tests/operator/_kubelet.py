"""Play the kubelet and the Job controller for a profiling Job against the fake API server.

`run_job` runs the Job's container command on this machine as a kubelet would run it in a
pod: its configMap volumes written out from the API server, emptyDirs and the termination log
as temporary paths (mount paths in the arguments point at them), its env resolved (values,
the downward API's namespace), and the API server reached through a kubeconfig (a pod would
use its service account). `finish_job` then records the result as the Job controller does: a
Pod with the container's terminated state (its termination message, else the log's tail,
as `FallbackToLogsOnError` says), and the Job's Complete or Failed condition.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _operator_harness import Cluster

from dynamo.runtime.kube import KubeConnection

RUN_LIMIT_S = 300.0  # a hang guard, not a performance assertion
LOG_TAIL_LINES = 80  # FallbackToLogsOnError keeps the log's last 80 lines (2 KiB)


@dataclass(frozen=True)
class PodRun:
    exit_code: int
    termination_message: str
    log: str
    mounts: dict[str, Path]


def _rewrite(arg: str, mounts: dict[str, Path]) -> str:
    for mount in sorted(mounts, key=len, reverse=True):
        if arg == mount or arg.startswith(mount.rstrip("/") + "/"):
            return str(mounts[mount]) + arg[len(mount) :]
    return arg


async def _materialize(
    cluster: Cluster, pod: dict[str, Any], namespace: str, root: Path
) -> dict[str, Path]:
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        local = root / "volumes" / mount["name"]
        local.mkdir(parents=True)
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            cm = await cluster.get("ConfigMap", name, namespace)
            assert cm is not None, f"the pod would not start: ConfigMap {name} does not exist"
            for key, text in (cm.get("data") or {}).items():
                (local / key).write_text(text)
        elif "emptyDir" not in volume:
            raise AssertionError(f"volume {mount['name']}: only configMap and emptyDir here")
        mounts[mount["mountPath"]] = local
    log_path = container.get("terminationMessagePath", "/dev/termination-log")
    termination = root / "termination-log"
    termination.touch()
    mounts[log_path] = termination
    return mounts


def _env(container: dict[str, Any], namespace: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        field = (source.get("fieldRef") or {}).get("fieldPath")
        assert field == "metadata.namespace", f"env {var['name']}: {source} not played here"
        env[var["name"]] = namespace
    return env


async def run_job(
    cluster: Cluster,
    job: dict[str, Any],
    workdir: Path,
    *,
    command: list[str] | None = None,
    before: Callable[[dict[str, Path]], None] | None = None,
) -> PodRun:
    """Run the Job's container (or `command` in its place: same volumes, env and access);
    `before` sees the volumes (mount path -> local directory) before it starts."""
    namespace = job["metadata"]["namespace"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = await _materialize(cluster, pod, namespace, workdir)
    if before is not None:
        before(mounts)
    kubeconfig = workdir / "kubeconfig"
    server = str(cluster.api.url).rstrip("/")
    connection = KubeConnection(server=server, token="t", insecure=True, namespace=namespace)
    kubeconfig.write_text(yaml.safe_dump(connection.as_kubeconfig()))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "KUBECONFIG": str(kubeconfig),
        # set in every pod by the kubelet (no service-account token here: KUBECONFIG is used)
        "KUBERNETES_SERVICE_HOST": "kubernetes.default.svc",
        "KUBERNETES_SERVICE_PORT": "443",
        **_env(container, namespace),
    }
    argv = command or [*container["command"], *container.get("args", [])]
    argv = [_rewrite(a, mounts) for a in argv]
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_LIMIT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    log = out.decode(errors="replace")
    code = proc.returncode
    assert code is not None
    message = mounts[container.get("terminationMessagePath", "/dev/termination-log")].read_text()
    fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
    if not message.strip() and code != 0 and fallback:
        message = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])[-2048:]
    return PodRun(code, message.strip(), log, mounts)


def pod_labels(job: dict[str, Any]) -> dict[str, str]:
    """The labels the Job controller gives its pods: the template's and `job-name`."""
    labels = job["spec"]["template"].get("metadata", {}).get("labels") or {}
    return {**labels, "job-name": job["metadata"]["name"]}


async def finish_job(cluster: Cluster, job: dict[str, Any], run: PodRun) -> None:
    """Record `run` as the Job controller and kubelet would: the pod's terminated container,
    then the Job's condition (Failed: BackoffLimitExceeded)."""
    meta = job["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    now = "2026-01-01T00:00:00Z"
    terminated: dict[str, Any] = {
        "exitCode": run.exit_code,
        "reason": "Completed" if run.exit_code == 0 else "Error",
        "startedAt": now,
        "finishedAt": now,
    }
    if run.termination_message:
        terminated["message"] = run.termination_message
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-{uuid.uuid4().hex[:5]}",
            "labels": {**pod_labels(job), "batch.kubernetes.io/job-name": name},
        },
        "spec": job["spec"]["template"]["spec"],
        "status": {
            "phase": "Succeeded" if run.exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "profiler",
                    "ready": False,
                    "restartCount": 0,
                    "image": job["spec"]["template"]["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "state": {"terminated": terminated},
                }
            ],
        },
    }
    await cluster.apply(pod, namespace)
    if run.exit_code == 0:
        status = {
            "succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}],
        }
    else:
        status = {
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        }
    await cluster.patch("Job", name, namespace, {"status": status}, sub="status")
