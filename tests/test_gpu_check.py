"""`scripts/gpu-check.sh --backend trtllm`: the whole check (worker, frontend, chat requests) run
on CPU with `ALLOW_CPU=1` and a `tensorrt_llm` package made of `dynamo.testing.fake_trtllm`,
so the script's TensorRT-LLM path is proven here before any GPU machine runs it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynamo.mocker.tinymodel import tiny_model_path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"
FAKE_PACKAGE = """\
from dynamo.testing.fake_trtllm import FakeSamplingParams as SamplingParams
from dynamo.testing.fake_trtllm import FakeTorchLLM as LLM

__version__ = "1.2.1-fake"
"""


def run_check(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALLOW_CPU": "1", "PYTHON": sys.executable, "STARTUP_TIMEOUT_S": "120"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_trtllm_backend_runs_the_worker_behind_the_frontend(tmp_path: Path) -> None:
    (tmp_path / "tensorrt_llm").mkdir()
    (tmp_path / "tensorrt_llm" / "__init__.py").write_text(FAKE_PACKAGE)
    model = str(tiny_model_path())
    done = run_check("--backend", "trtllm", model, pythonpath=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "TensorRT-LLM 1.2.1-fake"
    assert (
        lines[1] == f"== starting worker: {sys.executable} -m dynamo.trtllm --model-path {model} "
    )
    assert [line.split(" - ")[0] for line in lines if line.startswith(("PASS", "FAIL"))] == [
        "PASS: model registered in /v1/models",
        "PASS: chat completion",
        "PASS: streaming chat completion",
    ]
    assert lines[-1] == "== 3 passed, 0 failed"


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_llm") is not None, reason="TensorRT-LLM is installed"
)
def test_trtllm_backend_without_tensorrt_llm_says_what_to_install() -> None:
    done = run_check("--backend", "trtllm")
    assert done.returncode == 1
    assert done.stdout == (
        f"FAIL: TensorRT-LLM or pydynamo is missing in {sys.executable}: pip install tensorrt-llm\n"
    )


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="SGLang is installed")
def test_sglang_backend_without_sglang_says_what_to_install() -> None:
    done = run_check("--backend", "sglang")
    assert done.returncode == 1
    assert done.stdout == (
        f"FAIL: SGLang or pydynamo is missing in {sys.executable}: "
        "pip install pydynamo 'sglang[all]'\n"
    )


def test_unknown_backend_is_a_usage_error() -> None:
    done = run_check("--backend", "onnx")
    assert done.returncode == 2
    assert done.stderr == (
        "unknown backend 'onnx'\n"
        f"usage: {SCRIPT} [--backend vllm|sglang|trtllm] [MODEL] [-- extra worker args]\n"
    )
