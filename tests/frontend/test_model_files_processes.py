"""A worker's model files reach a frontend that shares no filesystem with it, whatever the
discovery backend: a mocker serves a model whose tokenizer.json is over 3 MB, the model
directory is renamed after registration, and a frontend started afterwards serves the model
with that tokenizer and chat template (fetched from the worker's status server)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import openai
import pytest
import yaml
from tokenizers import Tokenizer

from dynamo.testing.big_model import BIG_TOKEN, write_big_model
from dynamo.testing.kube_api import fake_kube_api
from dynamo.testing.processes import Procs, read_until
from dynamo.testing.servers import EtcdServer

pytestmark = pytest.mark.slow

WORKER_SERVING = re.compile(rb"worker ([0-9a-f]+) serving")
KUBE_NS = "team-a"


@pytest.fixture
async def kube_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Environment that puts a process on Kubernetes discovery against the emulator."""
    async with fake_kube_api() as api:
        # Declared here too in case the backend keeps its records in ConfigMaps.
        api.resources.setdefault(
            "v1/configmaps",
            kmock.ResourceInfo(
                kind="ConfigMap",
                namespaced=True,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            ),
        )
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": str(api.url).rstrip("/")}}],
            "users": [{"name": "tester", "user": {"token": "t"}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "tester"}},
            ],
            "current-context": "fake",
        }
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        yield {
            "DYN_DISCOVERY_BACKEND": "kubernetes",
            "KUBECONFIG": str(path),
            "POD_NAMESPACE": KUBE_NS,
        }


async def serve_moved_big_model(tmp_path: Path, env: dict[str, str]) -> None:
    model = tmp_path / "big"
    big_id = write_big_model(model)
    assert (model / "tokenizer.json").stat().st_size >= 3_000_000
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    procs = Procs({**env, "DYN_MODEL_FILES_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"})
    try:
        worker = await procs.spawn(
            "dynamo.mocker", "--model-path", str(model), "--model-name", "big",
            "--speedup-ratio", "50",
        )  # fmt: skip
        await read_until(worker, WORKER_SERVING)
        procs.drain(worker)
        model.rename(tmp_path / "moved")  # nothing of it is left where the card says

        url = await procs.frontend()
        await procs.wait_for_instances(url, 1)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        chat = await client.chat.completions.create(
            model="big", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        prompt = f"{BIG_TOKEN}user: hi\n{BIG_TOKEN}assistant: "
        expected = tokenizer.encode(prompt, add_special_tokens=False).ids
        assert expected[0] == big_id
        assert chat.usage is not None
        assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (len(expected), 5)
        # Only the big vocabulary has this id: the tiny one would reject the prompt.
        done = await client.completions.create(model="big", prompt=[big_id], max_tokens=2)
        assert done.usage is not None and done.usage.prompt_tokens == 1
        await client.close()
        cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
        assert len(cached) == 5 and all(re.fullmatch("[0-9a-f]{64}", n) for n in cached)
    finally:
        await procs.stop_all()


async def test_file_discovery(tmp_path: Path) -> None:
    await serve_moved_big_model(tmp_path, {"DYN_DISCOVERY_BACKEND": "file"})


async def test_etcd_discovery(tmp_path: Path, etcd_server: EtcdServer) -> None:
    await serve_moved_big_model(
        tmp_path, {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_server.url}
    )


async def test_kubernetes_discovery(tmp_path: Path, kube_env: dict[str, str]) -> None:
    await serve_moved_big_model(tmp_path, kube_env)
