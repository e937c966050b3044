"""The shared model cache pattern: the recipe's PVC and download Job, the graph that mounts
the cache, and workers that really start from a filled cache with downloads switched off."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from _operator_harness import REPO, load_yaml, validate_k8s

from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.operator.config import OperatorConfig
from dynamo.operator.manifests import build_manifests
from dynamo.testing.processes import Procs, mocker_args, read_until, wait_for_instances

RECIPE = REPO / "examples/recipes/model-cache/model-cache.yaml"
GRAPH = REPO / "examples/vllm/agg_model_cache.yaml"
NS = "team-a"


def _recipe() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(RECIPE.read_text()) if d}


def _worker_pod() -> dict[str, Any]:
    doc = load_yaml(GRAPH)
    body = {**doc, "metadata": {**doc["metadata"], "namespace": NS, "uid": "u1"}}
    objs = {
        (o["kind"], o["metadata"]["name"]): o
        for o in build_manifests(body, OperatorConfig()).objects
    }
    dep = objs[("Deployment", "vllm-agg-cached-vllmdecodeworker")]
    validate_k8s(dep)
    assert ("PersistentVolumeClaim", "model-cache") not in objs  # the recipe makes it
    return dict(dep["spec"]["template"]["spec"])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_recipe_objects_are_valid() -> None:
    recipe = _recipe()
    assert sorted(recipe) == ["Job", "PersistentVolumeClaim"]
    for obj in recipe.values():
        validate_k8s(obj)
    assert recipe["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_graph_reads_the_cache_the_job_fills() -> None:
    job = _recipe()["Job"]["spec"]["template"]["spec"]
    (download,) = job["containers"]
    (job_volume,) = job["volumes"]
    pod = _worker_pod()
    (main,) = pod["containers"]
    worker_volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert worker_volume["persistentVolumeClaim"] == job_volume["persistentVolumeClaim"]
    assert job_volume["persistentVolumeClaim"] == {"claimName": "model-cache"}
    job_mount = {m["name"]: m["mountPath"] for m in download["volumeMounts"]}["model-cache"]
    worker_mount = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}[worker_volume["name"]]
    assert job_mount == worker_mount == "/models"
    assert _env(download)["HF_HOME"] == _env(main)["HF_HOME"] == "/models/hf"
    assert _env(main)["HF_HUB_OFFLINE"] == "1"  # the workers never download
    served = shlex.split(main["args"][0])
    assert _env(download)["MODEL"] == served[served.index("--model") + 1]


def _filled_cache(hf_home: Path, repo: str) -> None:
    """What the download Job leaves: the hub cache layout under HF_HOME/hub."""
    revision = "0" * 40
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in Path(tiny_model_path()).iterdir():
        if path.is_file():
            (snapshot / path.name).write_bytes(path.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)


@pytest.mark.slow
async def test_workers_start_from_the_cache_without_downloading(
    procs: Procs, tmp_path: Path
) -> None:
    repo = "example-org/tiny-cached"
    offline = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = list(mocker_args(model_name=repo))
    args[args.index("dynamo:tinymodel")] = repo  # --model-path: the hub repo

    # an empty cache with downloads off: the worker refuses at start, it does not download
    empty = await procs.spawn(*args, env=offline)
    out = await read_until(empty, re.compile(rb"(error: --model-path .*)"))
    assert out.startswith(b"error: --model-path 'example-org/tiny-cached': cannot load")
    assert await empty.wait() == 2

    _filled_cache(tmp_path / "hf", repo)
    url = await procs.frontend()
    worker = await procs.spawn(*args, env=offline)
    procs.drain(worker)
    await wait_for_instances(url, 1)  # not procs': `empty` exited 2 on purpose
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        reply = await client.completions.create(model=repo, prompt="hello", max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
