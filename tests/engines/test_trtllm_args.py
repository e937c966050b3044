"""`python -m dynamo.trtllm` flags: our parser, `--extra-engine-args` files and the Kubernetes
guide's TensorRT-LLM command."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from dynamo.engines.trtllm_args import parse_trtllm_args
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError
from dynamo.testing.fake_trtllm import FakeTorchLLM

TRTLLM_EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "trtllm"
# The worker command of the Kubernetes guide ("Worker command examples per backend"), verbatim.
GUIDE_COMMAND = """python3 -m dynamo.trtllm
    --model-path deepseek-ai/DeepSeek-R1-Distill-Llama-8B
    --served-model-name deepseek-ai/DeepSeek-R1-Distill-Llama-8B
    --extra-engine-args $DYNAMO_HOME/recipes/deepseek-r1-distill-llama-8b/agg.yaml"""


def test_the_guides_command_parses_with_the_images_dynamo_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docker/Dockerfile.trtllm sets DYNAMO_HOME to where examples/trtllm is copied.
    monkeypatch.setenv("DYNAMO_HOME", str(TRTLLM_EXAMPLES))
    argv = shlex.split(os.path.expandvars(GUIDE_COMMAND))
    assert argv[:3] == ["python3", "-m", "dynamo.trtllm"]
    config, kwargs = parse_trtllm_args(argv[3:], resolve_model_path=False)
    assert config.served_model_name == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert config.role is WorkerRole.AGGREGATED
    assert kwargs == {
        "max_batch_size": 64,
        "max_num_tokens": 8192,
        "max_seq_len": 8192,
        "enable_chunked_prefill": True,
        "kv_cache_config": {"free_gpu_memory_fraction": 0.85, "enable_block_reuse": True},
        "cuda_graph_config": {"max_batch_size": 64},
        "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "tensor_parallel_size": 1,
        "backend": "pytorch",
    }
    FakeTorchLLM(**kwargs)  # every key is a TorchLlmArgs field (the fake refuses others)


def test_dockerfile_sets_dynamo_home_to_the_examples() -> None:
    dockerfile = (TRTLLM_EXAMPLES.parents[1] / "docker" / "Dockerfile.trtllm").read_text()
    assert "COPY examples /workspace/examples" in dockerfile
    assert "ENV DYNAMO_HOME=/workspace/examples/trtllm" in dockerfile


def test_parse_trtllm_args_with_extra_engine_args(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    yaml_file = tmp_path / "engine.yaml"
    yaml_file.write_text("max_seq_len: 4096\nkv_cache_config:\n  free_gpu_memory_fraction: 0.5\n")
    config, kwargs = parse_trtllm_args(
        [
            "--model-path",
            str(tmp_path),
            "--served-model-name",
            "qwen",
            "--extra-engine-args",
            str(yaml_file),
            "--disaggregation-mode",
            "prefill",
            "--backend",
            "tensorrt",
        ]
    )
    assert kwargs == {
        "max_seq_len": 4096,
        "kv_cache_config": {"free_gpu_memory_fraction": 0.5},
        "model": str(tmp_path),
        "tensor_parallel_size": 1,
        "backend": "tensorrt",
    }
    assert config.served_model_name == "qwen" and config.role is WorkerRole.PREFILL


def test_parse_trtllm_args_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model-path is required"):
        parse_trtllm_args([])
    with pytest.raises(ConfigError, match="invalid choice: 'onnx'"):
        parse_trtllm_args(["--model-path", "m", "--backend", "onnx"], resolve_model_path=False)
    with pytest.raises(ConfigError, match="No such file or directory"):
        parse_trtllm_args(
            ["--model-path", "m", "--extra-engine-args", str(tmp_path / "no.yaml")],
            resolve_model_path=False,
        )
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of LLM arguments"):
        parse_trtllm_args(
            ["--model-path", "m", "--extra-engine-args", str(bad)], resolve_model_path=False
        )


def test_output_parser_flags(tmp_path: Path) -> None:
    config, _ = parse_trtllm_args(
        ["--model-path", str(tmp_path), "--dyn-tool-call-parser", "harmony"],
        resolve_model_path=False,
    )
    assert config.parsers.card_fields() == {"tool_call_parser": "harmony", "reasoning_parser": None}
    with pytest.raises(ConfigError, match="invalid choice: 'nope'"):
        parse_trtllm_args(["--model-path", "m", "--dyn-reasoning-parser", "nope"])
