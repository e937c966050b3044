"""Publish a profiling run to the cluster: ConfigMap `dgdr-output-<dgdr>`, written by the
profiling Job itself through the Kubernetes API (no kubectl sidecar), owned by the request.

    python -m dynamo.profiler.publish --output-dir DIR --output-configmap dgdr-output-NAME

The ConfigMap holds what the operator needs, well under the API server's 1 MiB object limit:
`profiling_results.json`, `config_with_planner.yaml` and `mocker_config_with_planner.yaml`
(each: the planner's profile ConfigMap, then the graph). The npz files and plots stay in the
output directory (an emptyDir, or the request's `outputPVC`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dynamo.runtime.errors import ConfigError
from dynamo.runtime.kube import KubeApiError, KubeClient

FIELD_MANAGER = "dynamo-profiler"
PUBLISHED = (
    "profiling_results.json",
    "config_with_planner.yaml",
    "mocker_config_with_planner.yaml",
)
# The API server refuses objects over 1 MiB (etcd's request limit); metadata needs room too.
MAX_DATA_BYTES = 900 * 1024
REQUEST_LABEL = "dgdr.nvidia.com/name"
REQUEST_NAMESPACE_LABEL = "dgdr.nvidia.com/namespace"


class PublishError(Exception):
    """The outputs cannot be published; the message says why in one line."""


def collect(output_dir: Path) -> dict[str, str]:
    """The published files' text, by name. Raises `PublishError` when one is missing or the
    whole is too big for a ConfigMap."""
    data: dict[str, str] = {}
    for name in PUBLISHED:
        path = output_dir / name
        if not path.is_file():
            raise PublishError(f"the profiler wrote no {path}")
        data[name] = path.read_text()
    size = sum(len(text.encode()) for text in data.values())
    if size > MAX_DATA_BYTES:
        sizes = ", ".join(f"{k} {len(v.encode())} B" for k, v in data.items())
        raise PublishError(
            f"outputs are {size} bytes, over the {MAX_DATA_BYTES}-byte ConfigMap budget ({sizes})"
        )
    return data


def output_configmap(
    name: str, namespace: str, data: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, Any]:
    """The ConfigMap, owned by the request named in `DGDR_NAME`/`DGDR_UID` when both are set
    (as the operator's Job sets them), so deleting the request deletes it."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    request, uid = env.get("DGDR_NAME"), env.get("DGDR_UID")
    if request and uid:
        meta["labels"] = {REQUEST_LABEL: request, REQUEST_NAMESPACE_LABEL: namespace}
        meta["ownerReferences"] = [
            {
                "apiVersion": "nvidia.com/v1alpha1",
                "kind": "DynamoGraphDeploymentRequest",
                "name": request,
                "uid": uid,
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}


async def publish(obj: Mapping[str, Any]) -> None:
    """Server-side apply `obj` as field manager `dynamo-profiler` (in-cluster service
    account, else KUBECONFIG)."""
    api = await KubeClient.connect(field_manager=FIELD_MANAGER)
    try:
        if not obj["metadata"].get("namespace"):
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": api.namespace}}
        await api.apply(obj, force=True)
    finally:
        await api.close()


def publish_outputs(output_dir: Path, configmap: str, env: Mapping[str, str]) -> str:
    """Collect and publish; returns `namespace/name`. Raises `PublishError`."""
    data = collect(output_dir)
    obj = output_configmap(configmap, env.get("DGDR_NAMESPACE", ""), data, env)
    try:
        asyncio.run(publish(obj))
    except (KubeApiError, ConfigError) as exc:
        raise PublishError(f"cannot write ConfigMap {configmap}: {exc}") from exc
    meta = obj["metadata"]
    return f"{meta.get('namespace') or '(default namespace)'}/{meta['name']}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dynamo.profiler.publish", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="the profiler's output")
    parser.add_argument(
        "--output-configmap", required=True, help="ConfigMap to write, e.g. dgdr-output-NAME"
    )
    args = parser.parse_args(argv)
    try:
        where = publish_outputs(args.output_dir, args.output_configmap, os.environ)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"published ConfigMap {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
