"""Pre-deployment check (`python -m dynamo.operator.check`, also `dynamo check`): is the cluster
ready for pydynamo? kubectl, API access, CRDs, GPU nodes, a default StorageClass, and etcd /
NATS when configured. Prints a PASS/FAIL table with a fix for each failure; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any, Literal

from dynamo.operator.crdgen import CRDS
from dynamo.operator.kube import connect
from dynamo.runtime.config import add_arguments, option, resolve
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.kube import KubeApiError, KubeClient, KubeConnection

Outcome = Literal["PASS", "FAIL", "WARN", "SKIP"]
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """What to check besides the cluster itself."""

    etcd_address: str = option(
        "", help="etcd URL to probe (skipped when empty)", env="DYN_OPERATOR_ETCD_ADDRESS"
    )
    nats_address: str = option(
        "", help="NATS URL to probe (skipped when empty)", env="DYN_OPERATOR_NATS_ADDRESS"
    )
    timeout_s: float = option(5.0, help="seconds to wait for each probe", env="DYN_CHECK_TIMEOUT_S")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    detail: str
    fix: str = ""


def check_kubectl() -> CheckResult:
    path = shutil.which("kubectl")
    if path is None:
        return CheckResult(
            "kubectl",
            "FAIL",
            "not on PATH",
            "install kubectl (https://kubernetes.io/docs/tasks/tools/)",
        )
    return CheckResult("kubectl", "PASS", path)


async def check_api(api: KubeClient) -> CheckResult:
    try:
        nodes = (await api.list("v1", "Node")).items
    except KubeApiError as exc:
        if exc.status == 403:
            return CheckResult("Kubernetes API", "PASS", "reachable (may not list nodes)")
        return CheckResult(
            "Kubernetes API",
            "FAIL",
            str(exc),
            "point KUBECONFIG at the cluster (kubectl cluster-info must work)",
        )
    return CheckResult("Kubernetes API", "PASS", f"reachable, {len(nodes)} nodes")


async def check_crds(api: KubeClient) -> CheckResult:
    missing = []
    for info in CRDS:
        crd = await api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", info.name)
        if crd is None:
            missing.append(info.name)
    if missing:
        return CheckResult(
            "CRDs installed",
            "FAIL",
            "missing: " + ", ".join(missing),
            "helm install dynamo-crds deploy/helm/dynamo-crds --namespace default",
        )
    return CheckResult("CRDs installed", "PASS", ", ".join(i.short_names[0] for i in CRDS))


def _gpus(node: dict[str, Any]) -> int:
    value = str((node.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE, "0"))
    return int(value) if value.isdigit() else 0


async def check_gpus(api: KubeClient) -> CheckResult:
    nodes = (await api.list("v1", "Node")).items
    gpu_nodes = [n for n in nodes if _gpus(n) > 0]
    if not gpu_nodes:
        return CheckResult(
            "GPU nodes",
            "FAIL",
            f"0 of {len(nodes)} nodes have allocatable {GPU_RESOURCE}",
            "install the NVIDIA GPU Operator or device plugin (CPU-only graphs such as the "
            "mocker examples still run)",
        )
    total = sum(_gpus(n) for n in gpu_nodes)
    return CheckResult(
        "GPU nodes", "PASS", f"{len(gpu_nodes)} of {len(nodes)} nodes, {total} GPUs allocatable"
    )


async def check_storage_class(api: KubeClient) -> CheckResult:
    classes = (await api.list("storage.k8s.io/v1", "StorageClass")).items
    default = [
        c["metadata"]["name"]
        for c in classes
        if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
    ]
    if not default:
        names = ", ".join(c["metadata"]["name"] for c in classes) or "none"
        return CheckResult(
            "Default StorageClass",
            "FAIL",
            f"no default (classes: {names})",
            "kubectl patch storageclass <name> -p "
            '\'{"metadata": {"annotations": {"' + DEFAULT_CLASS_ANNOTATION + '": "true"}}}\'',
        )
    if len(default) > 1:
        return CheckResult(
            "Default StorageClass",
            "WARN",
            "several defaults: " + ", ".join(default),
            "keep one default StorageClass",
        )
    return CheckResult("Default StorageClass", "PASS", default[0])


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    first = url.split(",")[0].strip()
    parsed = urllib.parse.urlsplit(first if "://" in first else f"tcp://{first}")
    return parsed.hostname or "localhost", parsed.port or default_port


async def _probe(host: str, port: int, request: bytes, timeout_s: float) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        if request:
            writer.write(request)
            await writer.drain()
        return await asyncio.wait_for(reader.read(4096), timeout_s)
    finally:
        writer.close()
        await writer.wait_closed()


async def check_etcd(url: str, timeout_s: float) -> CheckResult:
    if not url:
        return CheckResult("etcd", "SKIP", "not configured (Kubernetes discovery needs none)")
    host, port = _host_port(url, 2379)
    request = f"GET /health HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    try:
        reply = await _probe(host, port, request, timeout_s)
    except (OSError, TimeoutError) as exc:
        return CheckResult(
            "etcd",
            "FAIL",
            f"{host}:{port} unreachable: {exc or type(exc).__name__}",
            "install it (--set global.etcd.install=true) or fix the address; run the check "
            "inside the cluster for cluster-local names",
        )
    body = reply.split(b"\r\n\r\n", 1)[-1]
    try:
        healthy = json.loads(body).get("health") == "true"
    except ValueError:
        healthy = False
    if not healthy:
        return CheckResult("etcd", "FAIL", f"{host}:{port} is not a healthy etcd", "check etcd")
    return CheckResult("etcd", "PASS", f"{host}:{port} healthy")


async def check_nats(url: str, timeout_s: float) -> CheckResult:
    if not url:
        return CheckResult("NATS", "SKIP", "not configured (TCP request plane needs none)")
    host, port = _host_port(url, 4222)
    try:
        greeting = await _probe(host, port, b"", timeout_s)
    except (OSError, TimeoutError) as exc:
        return CheckResult(
            "NATS",
            "FAIL",
            f"{host}:{port} unreachable: {exc or type(exc).__name__}",
            "install it (--set global.nats.install=true) or fix the address; run the check "
            "inside the cluster for cluster-local names",
        )
    if not greeting.startswith(b"INFO "):
        return CheckResult("NATS", "FAIL", f"{host}:{port} did not greet like NATS", "check NATS")
    return CheckResult("NATS", "PASS", f"{host}:{port} answers")


async def run_checks(
    config: CheckConfig, *, connection: KubeConnection | None = None
) -> list[CheckResult]:
    """Every check, in order; cluster checks are skipped when the API is out of reach."""
    results = [check_kubectl()]
    try:
        api = await connect(connection)
    except ConfigError as exc:
        results.append(
            CheckResult("Kubernetes API", "FAIL", str(exc), "set KUBECONFIG or run in a cluster")
        )
        api = None
    if api is not None:
        try:
            access = await check_api(api)
            results.append(access)
            if access.outcome == "PASS":
                for check in (check_crds, check_gpus, check_storage_class):
                    try:
                        results.append(await check(api))
                    except KubeApiError as exc:
                        name = check.__name__.removeprefix("check_").replace("_", " ")
                        results.append(CheckResult(name, "FAIL", str(exc), "grant read access"))
        finally:
            await api.close()
    results.append(await check_etcd(config.etcd_address, config.timeout_s))
    results.append(await check_nats(config.nats_address, config.timeout_s))
    return results


def format_table(results: Sequence[CheckResult]) -> str:
    """The results as an aligned table, then one line per fix."""
    width = max(len("CHECK"), *(len(r.name) for r in results))
    lines = [f"{'CHECK'.ljust(width)}  RESULT  DETAIL"]
    lines += [f"{r.name.ljust(width)}  {r.outcome.ljust(6)}  {r.detail}" for r in results]
    fixes = [r for r in results if r.fix and r.outcome in ("FAIL", "WARN")]
    if fixes:
        lines += ["", "How to fix:"] + [f"  {r.name}: {r.fix}" for r in fixes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, connection: KubeConnection | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dynamo.operator.check", description=__doc__.splitlines()[0]
    )
    add_arguments(parser, CheckConfig, title="check")
    try:
        config = resolve(CheckConfig, parser.parse_args(argv))
    except ConfigError as exc:
        parser.error(str(exc))
    results = asyncio.run(run_checks(config, connection=connection))
    print(format_table(results))
    return 1 if any(r.outcome == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
