"""Per-pod commands of multi-node services: the rank flags each backend needs, for
LeaderWorkerSet and Grove, in argv and shell form, and the services that are refused."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import pytest

from dynamo.deploy.builder import ServiceSpec, build_service
from dynamo.deploy.graph import load_graph
from dynamo.deploy.multinode import pod_spec
from dynamo.runtime.errors import ConfigError

LWS_HOST = "$(LWS_LEADER_ADDRESS)"
GROVE_HOST = "$(GROVE_PCSG_NAME)-$(GROVE_PCSG_INDEX)-worker-ldr-0.$(GROVE_HEADLESS_SERVICE)"


def _svc(container: dict[str, Any], backend: str = "vllm", nodes: int = 2) -> ServiceSpec:
    doc = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "g", "namespace": "ns"},
        "spec": {
            **({"backendFramework": backend} if backend else {}),
            "services": {
                "Worker": {
                    "componentType": "worker",
                    "multinode": {"nodeCount": nodes},
                    "extraPodSpec": {"mainContainer": copy.deepcopy(container)},
                }
            },
        },
    }
    return build_service(load_graph(doc), "Worker", mode="kubernetes")


SHELL_VLLM = {"command": ["/bin/sh", "-c"], "args": ["python3 -m dynamo.vllm --model M --tp 16"]}
ARGV_SGLANG = {"command": ["python3", "-m", "dynamo.sglang"], "args": ["--model-path", "M"]}


def test_vllm_lws_leader_and_worker_in_shell_form() -> None:
    svc = _svc(SHELL_VLLM, nodes=3)
    leader = pod_spec(svc, "lws", "leader")
    worker = pod_spec(svc, "lws", "worker")
    assert leader.command == worker.command == ("/bin/sh", "-c")
    assert leader.args == (
        "python3 -m dynamo.vllm --nnodes 3 --node-rank 0 "
        f"--master-addr '{LWS_HOST}' --model M --tp 16",
    )
    assert worker.args == (
        "python3 -m dynamo.vllm --nnodes 3 --node-rank '$(LWS_WORKER_INDEX)' "
        f"--master-addr '{LWS_HOST}' --headless --model M --tp 16",
    )
    assert list(svc.args) == SHELL_VLLM["args"]  # the source spec is untouched


def test_sglang_lws_in_argv_form_stays_argv() -> None:
    svc = _svc(ARGV_SGLANG, backend="sglang")
    worker = pod_spec(svc, "lws", "worker")
    assert worker.command == (
        "python3",
        "-m",
        "dynamo.sglang",
        "--nnodes",
        "2",
        "--node-rank",
        "$(LWS_WORKER_INDEX)",
        "--dist-init-addr",
        f"{LWS_HOST}:29500",
    )
    assert worker.args == ("--model-path", "M")


def test_grove_worker_rank_needs_a_shell() -> None:
    """Grove numbers the worker clique's pods from 0: rank = pod index + 1, which only a shell
    computes, so an argv command is wrapped in `/bin/sh -c exec ...`."""
    svc = _svc(ARGV_SGLANG, backend="sglang")
    worker = pod_spec(svc, "grove", "worker")
    assert worker.command == ("/bin/sh", "-c")
    (script,) = worker.args
    assert script == (
        "exec python3 -m dynamo.sglang --nnodes 2 "
        '--node-rank "$((GROVE_PCLQ_POD_INDEX + 1))" '
        f"--dist-init-addr '{GROVE_HOST}:29500' --model-path M"
    )
    assert shlex.split(script)[7] == "$((GROVE_PCLQ_POD_INDEX + 1))"
    leader = pod_spec(svc, "grove", "leader")
    assert "--node-rank" in leader.command and "0" in leader.command  # argv, no shell needed


def test_grove_vllm_in_shell_form() -> None:
    worker = pod_spec(_svc(SHELL_VLLM), "grove", "worker")
    assert worker.args == (
        'python3 -m dynamo.vllm --nnodes 2 --node-rank "$((GROVE_PCLQ_POD_INDEX + 1))" '
        f"--master-addr '{GROVE_HOST}' --headless --model M --tp 16",
    )


def test_a_command_with_its_own_rank_flags_is_refused() -> None:
    container = {"command": ["/bin/sh", "-c"], "args": ["python3 -m dynamo.vllm --node-rank 1"]}
    with pytest.raises(ConfigError, match="remove --node-rank from the command"):
        pod_spec(_svc(container), "lws", "worker")


def test_a_service_that_runs_no_engine_is_refused() -> None:
    svc = _svc({"command": ["python3", "-m", "dynamo.mocker", "--model-path", "M"]}, backend="")
    with pytest.raises(ConfigError, match="only vLLM, SGLang and TensorRT-LLM workers"):
        pod_spec(svc, "lws", "leader")
